"""The one secret scanner (`bot_bottle.gate.secrets`), table-driven: what it finds, on which
line, what it never says (the value), and the ordinary text it must leave alone (git SHAs,
UUIDs, base64 of prose, words that merely look like key prefixes)."""

import base64
import unittest
import uuid

from bot_bottle.gate.secrets import Finding, Scanner, scan

SHA = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
GITEA = "6f1e0c3f9d2b4a7c8e5d1b0a9f8e7d6c5b4a3928"
ANTHROPIC = "sk-ant-api03-" + "Ab3_dE-f" * 10
OPENAI_PROJ = "sk-proj-" + "Q1w2E3r4T5y6" * 5
OPENAI_OLD = "sk-" + "aB1cD2eF3gH4iJ5kL6mN7oP8qR9sT0uV1wX2yZ3a"
GITHUB = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
GITHUB_PAT = "github_pat_11ABCDEFG0" + "x1Y2z3" * 12
AWS_ID = "AKIAIOSFODNN7EXAMPLE"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"

FOUND = [  # (name, text, [(kind, line)])
    ("an RSA private key block", "x\n-----BEGIN RSA PRIVATE KEY-----\nMIIE...\n",
     [("private key block", 2)]),
    ("an OpenSSH private key block", "-----BEGIN OPENSSH PRIVATE KEY-----", [("private key block", 1)]),
    ("a bare PKCS#8 private key block", "-----BEGIN PRIVATE KEY-----", [("private key block", 1)]),
    ("a PGP private key block", "-----BEGIN PGP PRIVATE KEY BLOCK-----", [("private key block", 1)]),
    ("a GitHub personal token", f"export GH={GITHUB}", [("GitHub token", 1)]),
    ("a GitHub OAuth and app token", f"gho_{GITHUB[4:]}\nghs_{GITHUB[4:]}",
     [("GitHub token", 1), ("GitHub token", 2)]),
    ("a fine-grained GitHub token", f"token: {GITHUB_PAT}", [("GitHub token", 1)]),
    ("an AWS access key id", f"aws_access_key_id={AWS_ID}", [("AWS access key id", 1)]),
    ("an AWS secret key after its name", f'aws_secret_access_key = "{AWS_SECRET}"',
     [("AWS secret access key", 1)]),
    ("an Anthropic key", f"ANTHROPIC_API_KEY={ANTHROPIC}", [("Anthropic API key", 1)]),
    ("an OpenAI project key", f'key = "{OPENAI_PROJ}"', [("OpenAI API key", 1)]),
    ("an old-style OpenAI key", f"OPENAI_API_KEY={OPENAI_OLD}", [("OpenAI API key", 1)]),
    ("a Gitea token after 'token ='", f"GITEA_TOKEN = {GITEA}", [("Gitea token", 1)]),
    ("a Gitea token in an Authorization header", f"Authorization: token {GITEA}",
     [("Gitea token", 1)]),
    ("a Gitea token in JSON", f'{{"access_token": "{GITEA}"}}', [("Gitea token", 1)]),
    ("a Gitea token as a URL's password", f"https://bot:{GITEA}@gitea.example.com/a/b.git",
     [("Gitea token", 1)]),
    ("several kinds on several lines", f"a\n{ANTHROPIC}\nb\n{AWS_ID} and {GITHUB}",
     [("Anthropic API key", 2), ("GitHub token", 4), ("AWS access key id", 4)]),
]

CLEAN = [  # (name, text): nothing to find
    ("a git SHA", f"commit {SHA}\nMerge: {SHA[:7]} {SHA[7:14]}\nfixes {SHA}"),
    ("a SHA next to the word commit or sha", f"sha = {SHA}\nparent_sha: {SHA}\nrevision={SHA}"),
    ("a SHA after a word that merely contains 'token'", f"tokenizer {SHA}\ntokens = {SHA}"),
    ("a UUID", f"id = {uuid.UUID(int=0x1234567890abcdef1234567890abcdef)}\n{uuid.uuid4()}"),
    ("a base64 blob of prose", base64.b64encode(b"The quick brown fox jumps over the lazy dog. "
                                                 * 8).decode()),
    ("a public key block", "-----BEGIN PUBLIC KEY-----\n-----BEGIN CERTIFICATE-----"),
    ("words that start like keys", "sk-learn, sk-ant is a name, ghp_short, AKIA-not, task-ant-hill"),
    ("a short sk- identifier", "css class sk-button-primary-large"),
    ("an SHA-256 digest", "sha256:" + "ab" * 32),
    ("the egress gate's placeholder key", "ANTHROPIC_API_KEY=bot-bottle-egress-gate-placeholder-key"),
    ("an uppercase word run that is not a key id", "AKIAIOSFODNN7EXAMPLEXYZ is too long"),
    ("empty text", ""),
]


class ScanTest(unittest.TestCase):
    def test_each_token_shape_is_found_on_its_line(self):
        for name, text, expected in FOUND:
            with self.subTest(name):
                self.assertEqual(sorted((f.kind, f.line) for f in scan(text)), sorted(expected))

    def test_ordinary_text_that_looks_random_is_not_a_finding(self):
        for name, text in CLEAN:
            with self.subTest(name):
                self.assertEqual(scan(text), [])

    def test_known_values_are_found_anywhere_by_their_label(self):
        known = {"the run token": "Xy7_run-token-abcdefghijkl", "FORGE_TOKEN": "plain-forge-token-1"}
        text = "nothing\nprefixXy7_run-token-abcdefghijklsuffix\nurl?t=plain-forge-token-1&x=1"
        self.assertEqual(scan(text, known), [Finding("the run token", 2), Finding("FORGE_TOKEN", 3)])

    def test_known_values_may_be_given_without_labels(self):
        self.assertEqual(scan("a\nb s3cr3t-value-123 c", ["s3cr3t-value-123"]),
                         [Finding("a known secret", 2)])

    def test_short_or_empty_known_values_are_not_searched(self):
        self.assertEqual(scan("the word demo and an empty value", {"A": "demo", "B": "", "C": "a"}),
                         [])

    def test_a_value_that_is_both_known_and_shaped_is_reported_under_both_kinds_once(self):
        found = scan(f"key={ANTHROPIC} and again {ANTHROPIC}", {"ANTHROPIC_API_KEY": ANTHROPIC})
        self.assertEqual(found, [Finding("ANTHROPIC_API_KEY", 1), Finding("Anthropic API key", 1)])

    def test_a_finding_never_holds_the_value(self):
        values = [GITEA, ANTHROPIC, OPENAI_PROJ, OPENAI_OLD, GITHUB, GITHUB_PAT, AWS_ID,
                  AWS_SECRET, "Xy7_run-token-abcdefghijkl"]
        text = "\n".join(f"aws_secret_key = {v}" for v in values)
        found = scan(text, {"the run token": values[-1]})
        self.assertEqual({f.line for f in found}, set(range(1, len(values) + 1)), found)
        for finding in found:
            self.assertFalse([v for v in values if v in repr(finding)], finding)

    def test_the_line_scanner_gives_what_scan_gives(self):
        known = {"the run token": "Xy7_run-token-abcdefghijkl"}
        text = f"a\n{GITHUB}\nXy7_run-token-abcdefghijkl\n{SHA}"
        scanner = Scanner(known)
        by_line = [f for n, line in enumerate(text.splitlines(), 1) for f in scanner.line(line, n)]
        self.assertEqual(by_line, scan(text, known))


if __name__ == "__main__":
    unittest.main()
