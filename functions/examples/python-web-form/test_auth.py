"""Unit tests of auth.py: `squall test functions/examples/python-web-form`."""

import unittest

import auth


class FormTest(unittest.TestCase):
    def test_form_bodies_decode_plus_and_percent_escapes(self):
        fields = auth.form_decode(b"username=ada&password=p%40ss+word%21&x=%zz&empty=&username=b")
        self.assertEqual(fields["username"], "ada")
        self.assertEqual(fields["password"], "p@ss word!")
        self.assertEqual(fields["x"], "%zz")
        self.assertEqual(fields["empty"], "")
        self.assertEqual(auth.form_decode(b"a=%4")["a"], "%4")
        self.assertEqual(auth.form_decode(b"caf%C3%A9=1")["café"], "1")
        self.assertEqual(auth.form_decode(b""), {})

    def test_user_names_are_lowercase_words(self):
        self.assertTrue(auth.valid_username("ada_l-1"))
        for bad in ["ab", "Ada", "a.b", "a/b", "ada lovelace", "a" * 33, "adà", "ada\n", None]:
            self.assertFalse(auth.valid_username(bad), bad)


class PasswordTest(unittest.TestCase):
    def test_a_password_hash_is_salted_scrypt_and_checks(self):
        first = auth.hash_password("correct horse")
        second = auth.hash_password("correct horse")
        self.assertTrue(first.startswith("$scrypt$ln=14,r=8,p=1$"), first)
        self.assertNotEqual(first, second, "each hash has its own salt")
        self.assertTrue(auth.check_password("correct horse", first))
        self.assertFalse(auth.check_password("wrong horse", first))

    def test_a_hash_that_does_not_parse_or_is_too_costly_matches_nothing(self):
        good = auth.hash_password("correct horse")
        salt, digest = good.split("$")[3:]
        for bad in [
            "not a hash",
            "",
            None,
            good.replace("$scrypt$", "$argon2id$"),
            f"$scrypt$ln=30,r=8,p=1${salt}${digest}",
            f"$scrypt$ln=14,r=8${salt}${digest}",
            f"$scrypt$ln=14,r=8,p=1${salt}$!!",
        ]:
            self.assertFalse(auth.check_password("correct horse", bad), bad)

    def test_the_decoy_hash_is_made_once_and_matches_no_guess(self):
        self.assertIs(auth.decoy_hash(), auth.decoy_hash())
        self.assertFalse(auth.check_password("correct horse", auth.decoy_hash()))


class SessionTest(unittest.TestCase):
    def test_a_session_verifies_only_unchanged_unexpired_and_under_its_key(self):
        value = auth.session_value("k", "ada", 100)
        self.assertEqual(auth.verify_session("k", value, 99), "ada")
        self.assertIsNone(auth.verify_session("k", value, 100))
        self.assertIsNone(auth.verify_session("other", value, 99))
        self.assertIsNone(auth.verify_session("k", value.replace("ada", "bob", 1), 99))
        self.assertIsNone(auth.verify_session("k", value.replace(".100.", ".999.", 1), 99))
        self.assertIsNone(auth.verify_session("k", value.replace(".100.", ".0100.", 1), 99))
        self.assertIsNone(auth.verify_session("k", "ada.100", 99))
        self.assertIsNone(auth.verify_session("k", value + ".x", 99))
        self.assertIsNone(auth.verify_session("k", "ada.１００." + value.split(".")[2], 99))

    def test_the_signature_is_hmac_sha256_of_the_documented_message(self):
        # HMAC-SHA256("k", "session:v1:ada:100"), computed independently.
        self.assertEqual(
            auth.session_value("k", "ada", 100),
            "ada.100.90782f28cdb4a2d8306a52637a0f658af9c7765b3a2f733df74dd46bfc591e87",
        )


if __name__ == "__main__":
    unittest.main()
