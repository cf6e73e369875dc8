// SHA-256 and HMAC-SHA256 against published vectors: FIPS 180-4's examples, RFC 4231's HMAC
// test cases and the example of Slack's request-signing guide.
import { hmacSha256, sameText, sha256, toHex } from "./sha256.mjs";

const { assert, assertEqual } = squall.testing;
const filled = (length, byte) => new Uint8Array(length).fill(byte);

export function testSha256MatchesTheFipsExamples() {
  const EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
  assertEqual(toHex(sha256("")), EMPTY);
  const ABC = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
  assertEqual(toHex(sha256("abc")), ABC);
  assertEqual(
    toHex(sha256("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")),
    "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
  );
  // 112 bytes: two blocks, the padding at the end of the second.
  assertEqual(
    toHex(
      sha256(
        "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopq" +
          "klmnopqrlmnopqrsmnopqrstnopqrstu",
      ),
    ),
    "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1",
  );
}

export function testSha256PadsMessagesAroundTheBlockBoundary() {
  // 55 bytes leave room for the padding in one block; 56 to 63 need a second one.
  const cases = {
    55: "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318",
    56: "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a",
    63: "7d3e74a05d7db15bce4ad9ec0658ea98e3f06eeecf16b4c6fff2da457ddc2f34",
    64: "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb",
    65: "635361c48bb9eab14198e76ea8ab7f1a41685d6ad62aa9146d301d4f17eb0ae0",
  };
  for (const [length, digest] of Object.entries(cases)) {
    assertEqual(toHex(sha256("a".repeat(Number(length)))), digest, `${length} bytes`);
  }
}

export function testHmacMatchesRfc4231() {
  assertEqual(
    toHex(hmacSha256(filled(20, 0x0b), "Hi There")),
    "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
    "test case 1",
  );
  assertEqual(
    toHex(hmacSha256("Jefe", "what do ya want for nothing?")),
    "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
    "test case 2",
  );
  assertEqual(
    toHex(hmacSha256(filled(20, 0xaa), filled(50, 0xdd))),
    "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
    "test case 3",
  );
  // A key longer than a block is hashed first.
  assertEqual(
    toHex(hmacSha256(filled(131, 0xaa), "Test Using Larger Than Block-Size Key - Hash Key First")),
    "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
    "test case 6",
  );
  assertEqual(
    toHex(
      hmacSha256(
        filled(131, 0xaa),
        "This is a test using a larger than block-size key and a larger than block-size data. " +
          "The key needs to be hashed before being used by the HMAC algorithm.",
      ),
    ),
    "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
    "test case 7",
  );
}

export function testHmacMatchesSlacksSigningExample() {
  const body =
    "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow" +
    "&channel_id=G8PSS9T3V" +
    "&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=" +
    "&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554" +
    "%2F96rGlfmibIGlgcZRskXaIFfN" +
    "&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
  assertEqual(
    toHex(hmacSha256("8f742231b10e8888abcd99yyyzzz85a5", `v0:1531420618:${body}`)),
    "a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
  );
}

export function testStringsAreHashedAsUtf8() {
  assertEqual(toHex(sha256("é")), toHex(sha256(new Uint8Array([0xc3, 0xa9]))));
}

export function testSameTextComparesWholeStrings() {
  assert(sameText("v0=abc", "v0=abc"));
  assert(!sameText("v0=abc", "v0=abd"));
  assert(!sameText("v0=abc", "v0=ab"));
  assert(!sameText("v0=abc", undefined));
}
