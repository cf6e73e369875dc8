// A Squall function in JavaScript: `handler` gets the event (parsed JSON, or a Uint8Array
// for other input) and the invocation's context; what it returns becomes the output.
export async function handler(event, context) {
  const name = event?.name ?? "world";
  console.log(`greeting ${name} (invocation ${context.invocationId})`);
  return { message: `Hello, ${name}!` };
}
