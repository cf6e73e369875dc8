// squall.TestContext: a local context for unit tests, with state, events and logs in memory.
package squall;

import java.io.ByteArrayOutputStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A context that no platform backs, for a bundle's own tests ({@code squall test}): the KV store
 * is a map ({@link #kv()}), publishes and streamed chunks are recorded ({@link #published()},
 * {@link #streamed()}), logs collected ({@link #logs()}). {@link #failWith(String)} makes every
 * host service throw a {@link HostException} with that code.
 */
public class TestContext extends Context {
    /** A recorded publish. */
    public record Published(String subject, byte[] payload) {
        /** The payload as UTF-8 text. */
        public String text() {
            return new String(payload, StandardCharsets.UTF_8);
        }
    }

    /** A collected log line. */
    public record LogLine(int level, String message) {}

    private final Map<String, byte[]> kv = Collections.synchronizedMap(new LinkedHashMap<>());
    private final List<Published> published = Collections.synchronizedList(new ArrayList<>());
    private final List<LogLine> logs = Collections.synchronizedList(new ArrayList<>());
    private final List<byte[]> streamed = Collections.synchronizedList(new ArrayList<>());
    private String functionName = "test";
    private String invocationId = "test-invocation";
    private int attempt = 1;
    private long deadlineMs;
    private String configJson = "{}";
    private String triggerJson = "{\"source\":\"test\"}";
    private volatile boolean cancelled;
    private volatile String failure;

    /** A context for function {@code test}, attempt 1, empty config, no deadline. */
    public TestContext() {}

    /** Sets the function's config. */
    public TestContext withConfig(Map<String, ?> config) {
        Map<String, Object> merged = new LinkedHashMap<>(config);
        Object secrets = Json.object(configJson).get("secrets");
        if (secrets != null && !merged.containsKey("secrets")) {
            merged.put("secrets", secrets);
        }
        this.configJson = Json.write(merged);
        return this;
    }

    /** Sets the function's secrets (the config's {@code secrets} object). */
    public TestContext withSecrets(Map<String, ?> secrets) {
        Map<String, Object> config = Json.object(configJson);
        config.put("secrets", new LinkedHashMap<>(secrets));
        this.configJson = Json.write(config);
        return this;
    }

    /** Sets the trigger event. */
    public TestContext withTrigger(Map<String, ?> trigger) {
        this.triggerJson = Json.write(trigger);
        return this;
    }

    /** Sets the function name. */
    public TestContext withFunctionName(String name) {
        this.functionName = name;
        return this;
    }

    /** Sets the attempt number. */
    public TestContext withAttempt(int attempt) {
        this.attempt = attempt;
        return this;
    }

    /** Sets the deadline, in milliseconds since the Unix epoch. */
    public TestContext withDeadlineMs(long deadlineMs) {
        this.deadlineMs = deadlineMs;
        return this;
    }

    /** Makes {@link #cancelled()} true. */
    public void cancel() {
        cancelled = true;
    }

    /** Makes every host service throw a {@link HostException} with {@code code} ({@code null}: succeed again). */
    public TestContext failWith(String code) {
        this.failure = code;
        return this;
    }

    /** The KV store. */
    public Map<String, byte[]> kv() {
        return kv;
    }

    /** The publishes so far, in order. */
    public List<Published> published() {
        return published;
    }

    /** The chunks streamed so far ({@link #streamWrite(byte[])}), in order. */
    public List<byte[]> streamed() {
        return streamed;
    }

    /** The chunks streamed so far, joined and read as UTF-8 text. */
    public String streamedText() {
        ByteArrayOutputStream joined = new ByteArrayOutputStream();
        synchronized (streamed) {
            for (byte[] chunk : streamed) {
                joined.writeBytes(chunk);
            }
        }
        return joined.toString(StandardCharsets.UTF_8);
    }

    /** The log lines so far, in order. */
    public List<LogLine> logs() {
        return logs;
    }

    /** Whether a line with this level and message was logged. */
    public boolean logged(int level, String message) {
        synchronized (logs) {
            for (LogLine line : logs) {
                if (line.level() == level && line.message().equals(message)) {
                    return true;
                }
            }
        }
        return false;
    }

    @Override public String functionName() { return functionName; }
    @Override public String invocationId() { return invocationId; }
    @Override public int attempt() { return attempt; }
    @Override public long deadlineMs() { return deadlineMs; }
    @Override public String traceparent() { return null; }
    @Override public String configJson() { return configJson; }
    @Override public String triggerJson() { return triggerJson; }
    @Override public boolean cancelled() { return cancelled; }

    @Override
    public void log(int level, String message) {
        logs.add(new LogLine(level, message));
    }

    private void service(String operation) {
        String code = failure;
        if (code != null) {
            throw new HostException(code, operation + ": failed with " + code + " (TestContext.failWith)");
        }
    }

    @Override
    public byte[] kvGet(String key) {
        service("kv_get");
        byte[] value = kv.get(key);
        return value == null ? null : value.clone();
    }

    @Override
    public void kvPut(String key, byte[] value, long ttlMs) {
        service("kv_put");
        kv.put(key, value.clone());
    }

    @Override
    public void kvDelete(String key) {
        service("kv_delete");
        kv.remove(key);
    }

    @Override
    public void publish(String subject, byte[] payload) {
        service("publish");
        published.add(new Published(subject, payload.clone()));
    }

    @Override
    public void streamWrite(byte[] chunk) {
        service("stream_write");
        streamed.add(chunk.clone());
    }
}
