// HelloTest.java: the example's tests with a local context; `squall test .` runs them in the runtime.
package hello;

import java.util.Map;
import squall.TestContext;

public class HelloTest {
    public static void testGreetsWithTheConfiguredWordAndCountsVisitsPerName() {
        TestContext ctx = new TestContext().withConfig(Map.of("greeting", "Hi"));
        Hello hello = new Hello();
        assertEquals(Map.of("greeting", "Hi, Ada!", "visits", 1L), hello.handle(ctx, Map.of("name", "Ada")));
        assertEquals(Map.of("greeting", "Hi, Ada!", "visits", 2L), hello.handle(ctx, Map.of("name", "Ada")));
        assertEquals("2", new String(ctx.kv().get("visits/Ada")));
        if (!ctx.logged(3, "hello: greeting Ada (visit 2)")) {
            throw new AssertionError("logs: " + ctx.logs());
        }
    }

    public static void testEscapesNamesIntoKeysAndRefusesLongOnes() {
        assertEquals("visits/Zo=C3=AB=20Ng", Hello.visitsKey("Zoë Ng"));
        try {
            new Hello().handle(new TestContext(), Map.of("name", "x".repeat(65)));
            throw new AssertionError("a long name is refused");
        } catch (IllegalArgumentException expected) {
            // refused
        }
    }

    static void assertEquals(Object expected, Object actual) {
        if (!expected.equals(actual)) {
            throw new AssertionError("expected " + expected + ", got " + actual);
        }
    }
}
