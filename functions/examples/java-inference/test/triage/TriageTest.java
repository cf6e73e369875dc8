// TriageTest.java: the model's answers for clear cases and the refusals of bad input.
package triage;

import java.util.List;
import java.util.Map;
import squall.TestContext;

public class TriageTest {
    public static void testAnOutageIsUrgentAndAQuestionIsNot() {
        Triage triage = new Triage();
        Map<?, ?> outage = (Map<?, ?>) triage.handle(new TestContext(), Map.of("text", "Production is DOWN, outage since 9am"));
        check("urgent".equals(outage.get("label")), outage);
        check(List.of("outage", "down", "production").equals(outage.get("top")), outage);
        Map<?, ?> question = (Map<?, ?>) triage.handle(new TestContext(), Map.of("text", "A question about the docs, thanks"));
        check("normal".equals(question.get("label")), question);
    }

    public static void testBadInputIsRefused() {
        try {
            new Triage().handle(new TestContext(), Map.of("texts", List.of(1, 2)));
            throw new AssertionError("a number is not a text");
        } catch (IllegalArgumentException expected) {
            // refused
        }
    }

    static void check(boolean ok, Object got) {
        if (!ok) {
            throw new AssertionError("got " + got);
        }
    }
}
