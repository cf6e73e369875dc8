// Unit tests of app.mjs: `squall test functions/examples/js-hello` calls every exported
// function whose name starts with `test`.
import { handler, visitsKey, MAX_NAME_BYTES } from "./app.mjs";

const { assert, assertEqual, context } = squall.testing;

export function testGreetsTheGivenNameWithTheConfiguredWord() {
  const ctx = context({ config: { greeting: "Ahoy" } });
  assertEqual(handler({ name: "Ada" }, ctx), { greeting: "Ahoy, Ada!", visits: 1 });
}

export function testGreetsTheWorldWithoutAName() {
  const ctx = context({ config: { greeting: "Hello" } });
  for (const event of [null, {}, { name: "" }, { name: "  " }, { name: 7 }, new Uint8Array([1])]) {
    assertEqual(handler(event, ctx).greeting, "Hello, world!", JSON.stringify(event));
  }
}

export function testTheGreetingWordDefaultsToHello() {
  assertEqual(handler({ name: "Ada" }, context()).greeting, "Hello, Ada!");
}

export function testEachNameHasItsOwnVisitCounterInState() {
  const ctx = context();
  const visits = ["Ada", "Ada", "Bob", "Ada"].map((name) => handler({ name }, ctx).visits);
  assertEqual(visits, [1, 2, 1, 3]);
  assertEqual(ctx.kv.getText("visits/Ada"), "3");
  assertEqual(ctx.kv.getText("visits/Bob"), "1");
}

export function testEachGreetingIsLogged() {
  const ctx = context();
  handler({ name: "Ada" }, ctx);
  assertEqual(ctx.logs, [{ level: "info", message: "hello: greeting Ada (visit 1)" }]);
}

export function testNamesOutsideTheKeyAlphabetAreEscapedAndKeptApart() {
  assertEqual(visitsKey("Zoë Ng"), "visits/Zo=C3=AB=20Ng");
  assertEqual(visitsKey("a=20"), "visits/a=3D20");
  assert(visitsKey("a b") !== visitsKey("a=20b"), "an escape is not a name");
  const ctx = context();
  assertEqual(handler({ name: "Zoë Ng" }, ctx).visits, 1);
  assertEqual(handler({ name: "Zoë/Ng" }, ctx).visits, 1);
}

export function testANameTooLongForAStateKeyIsRefused() {
  const ctx = context();
  const longest = "é".repeat(MAX_NAME_BYTES / 2);
  assertEqual(handler({ name: longest }, ctx).visits, 1);
  let refused = null;
  try {
    handler({ name: longest + "x" }, ctx);
  } catch (error) {
    refused = error;
  }
  assert(refused instanceof RangeError, `expected a RangeError, got ${refused}`);
  assertEqual(ctx.store.size, 1);
}
