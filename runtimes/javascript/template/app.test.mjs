// Run with `squall test`: every exported function whose name starts with `test` is called.
import { handler } from "./app.mjs";

const { assertEqual, context } = squall.testing;

export async function testGreetsByName() {
  assertEqual(await handler({ name: "Ada" }, context()), { message: "Hello, Ada!" });
}

export async function testGreetsTheWorldByDefault() {
  assertEqual(await handler({}, context()), { message: "Hello, world!" });
}
