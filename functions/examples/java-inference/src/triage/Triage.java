// Triage.java: a small inference function: a logistic-regression model over word features scores support tickets as urgent or not, loaded once per process.
package triage;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import squall.Context;
import squall.JsonHandler;

public class Triage implements JsonHandler {
    /** At most this many texts per call. */
    static final int MAX_TEXTS = 256;

    private final Model model;

    /** Runs once per process when the function loads: the warm state every call shares. */
    public Triage() {
        this.model = Model.standard();
    }

    /**
     * {@code {"text": "..."}} → {@code {"label": "urgent", "score": 0.97, "top": ["outage", ...]}};
     * {@code {"texts": [...]}} → {@code {"predictions": [...]}} in order.
     */
    @Override
    public Object handle(Context ctx, Object event) {
        if (!(event instanceof Map<?, ?> input)) {
            throw new IllegalArgumentException("the input is {\"text\": ...} or {\"texts\": [...]}");
        }
        if (input.get("text") instanceof String text) {
            return predict(text);
        }
        if (input.get("texts") instanceof List<?> texts) {
            if (texts.size() > MAX_TEXTS) {
                throw new IllegalArgumentException("at most " + MAX_TEXTS + " texts per call, got " + texts.size());
            }
            List<Object> predictions = new ArrayList<>();
            for (Object text : texts) {
                if (!(text instanceof String s)) {
                    throw new IllegalArgumentException("every text is a string");
                }
                predictions.add(predict(s));
            }
            ctx.info("triage: scored " + predictions.size() + " texts");
            return Map.of("predictions", predictions);
        }
        throw new IllegalArgumentException("the input is {\"text\": ...} or {\"texts\": [...]}");
    }

    Map<String, Object> predict(String text) {
        List<String> words = Model.words(text);
        double score = model.score(words);
        Map<String, Object> prediction = new LinkedHashMap<>();
        prediction.put("label", score >= 0.5 ? "urgent" : "normal");
        prediction.put("score", Math.round(score * 1000) / 1000.0);
        prediction.put("top", model.strongest(words, 3));
        return prediction;
    }

    /** A logistic regression over lower-cased words: a weight per known word and a bias. */
    static final class Model {
        final Map<String, Double> weights;
        final double bias;

        Model(Map<String, Double> weights, double bias) {
            this.weights = weights;
            this.bias = bias;
        }

        /** The example's model, weights set by hand for this example. */
        static Model standard() {
            Map<String, Double> w = new LinkedHashMap<>();
            w.put("outage", 2.6);
            w.put("down", 2.1);
            w.put("urgent", 1.9);
            w.put("production", 1.5);
            w.put("breach", 2.8);
            w.put("cannot", 1.1);
            w.put("error", 0.9);
            w.put("failed", 1.0);
            w.put("asap", 1.4);
            w.put("thanks", -0.8);
            w.put("question", -1.2);
            w.put("how", -0.6);
            w.put("feature", -1.0);
            w.put("docs", -0.9);
            w.put("whenever", -1.5);
            return new Model(Map.copyOf(w), -1.2);
        }

        static List<String> words(String text) {
            List<String> words = new ArrayList<>();
            for (String word : text.toLowerCase(Locale.ROOT).split("[^a-z0-9]+")) {
                if (!word.isEmpty()) {
                    words.add(word);
                }
            }
            return words;
        }

        double score(List<String> words) {
            double z = bias;
            for (String word : words) {
                z += weights.getOrDefault(word, 0.0);
            }
            return 1 / (1 + Math.exp(-z));
        }

        /** The `n` known words that pushed the score most, strongest first. */
        List<String> strongest(List<String> words, int n) {
            return words.stream()
                .distinct()
                .filter(weights::containsKey)
                .sorted((a, b) -> Double.compare(Math.abs(weights.get(b)), Math.abs(weights.get(a))))
                .limit(n)
                .toList();
        }
    }
}
