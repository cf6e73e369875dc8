// HelloTest.java: the function's tests; `squall test .` runs every public static test* method of the *Test classes.
package app;

import java.util.Map;
import squall.TestContext;

public class HelloTest {
    public static void testGreetsByNameAndCountsVisits() throws Exception {
        TestContext ctx = new TestContext().withConfig(Map.of("greeting", "Hi"));
        Object first = new Hello().handle(ctx, Map.of("name", "Ada"));
        if (!Map.of("message", "Hi, Ada!", "visits", 1L).equals(first)) {
            throw new AssertionError("got " + first);
        }
        Object second = new Hello().handle(ctx, Map.of("name", "Ada"));
        if (!Map.of("message", "Hi, Ada!", "visits", 2L).equals(second)) {
            throw new AssertionError("got " + second);
        }
    }
}
