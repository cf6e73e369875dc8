// squall.Context: what a handler knows about its invocation, and the host's services.
package squall;

import java.nio.charset.StandardCharsets;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * One invocation's context: names, attempt, deadline, config, secrets, trigger, logs, and the
 * host services (the function's key-value state, event publishing and streamed output).
 *
 * <p>The platform's context is valid during its call and on the call's thread only; using it
 * from another thread, or after the call, throws {@code IllegalStateException} (logs then go to
 * the process's standard error). {@link TestContext} is a local one for tests.
 */
public abstract class Context {
    /** Log levels, as numbered by the platform. */
    public static final int ERROR = 1;
    public static final int WARN = 2;
    public static final int INFO = 3;
    public static final int DEBUG = 4;
    public static final int TRACE = 5;

    private Map<String, Object> config;
    private Map<String, Object> trigger;

    /** The function's name. */
    public abstract String functionName();

    /** This invocation's id, the same for every attempt. */
    public abstract String invocationId();

    /** The attempt number, starting at 1. */
    public abstract int attempt();

    /** When the platform gives up on this attempt, in milliseconds since the Unix epoch. */
    public abstract long deadlineMs();

    /** Milliseconds until the deadline; 0 once it has passed. */
    public long remainingTimeMillis() {
        return Math.max(0, deadlineMs() - System.currentTimeMillis());
    }

    /** The W3C {@code traceparent} of the invocation, or {@code null}. */
    public abstract String traceparent();

    /** The function's config as JSON text ({@code {}} when it has none). */
    public abstract String configJson();

    /** The trigger event as JSON text: {@code {"source": "http" | "nats" | "cron" | "kv" | "web", ...}}. */
    public abstract String triggerJson();

    /** The function's config values (the {@code [function.config]} table), parsed once. */
    public Map<String, Object> config() {
        if (config == null) {
            config = Json.object(configJson());
        }
        return config;
    }

    /** The function's secrets: the config's {@code secrets} object, empty when absent. */
    @SuppressWarnings("unchecked")
    public Map<String, Object> secrets() {
        Object secrets = config().get("secrets");
        return secrets instanceof Map ? (Map<String, Object>) secrets : new LinkedHashMap<>();
    }

    /** What triggered the invocation, parsed once: {@code {"source": "http", ...}}. */
    public Map<String, Object> trigger() {
        if (trigger == null) {
            trigger = Json.object(triggerJson());
        }
        return trigger;
    }

    /** Sends one log line at {@code level} ({@link #ERROR} … {@link #TRACE}). */
    public abstract void log(int level, String message);

    /** Logs at {@link #ERROR}. */
    public void error(String message) {
        log(ERROR, message);
    }

    /** Logs at {@link #WARN}. */
    public void warn(String message) {
        log(WARN, message);
    }

    /** Logs at {@link #INFO}. */
    public void info(String message) {
        log(INFO, message);
    }

    /** Logs at {@link #DEBUG}. */
    public void debug(String message) {
        log(DEBUG, message);
    }

    /** Logs at {@link #TRACE}. */
    public void trace(String message) {
        log(TRACE, message);
    }

    /** Whether the platform asked this invocation to stop (its deadline passed, or it was cancelled). */
    public abstract boolean cancelled();

    /**
     * Writes one chunk of the output now: a caller that asked for a stream receives it at once.
     * Once a function has streamed, what its handler returns is sent as the last chunk (return
     * an empty body to add nothing), and the invocation is not retried. Throws {@link
     * HostException} on failure: {@code unsupported} on a host too old to stream (return the
     * whole output instead), {@code too_large} past the output limit.
     */
    public abstract void streamWrite(byte[] chunk);

    /** Writes UTF-8 text as the next chunk of the output; see {@link #streamWrite(byte[])}. */
    public void streamWrite(String chunk) {
        streamWrite(chunk.getBytes(StandardCharsets.UTF_8));
    }

    /** The value stored under {@code key}, or {@code null}. */
    public abstract byte[] kvGet(String key);

    /** The value stored under {@code key} as UTF-8 text, or {@code null}. */
    public String kvGetText(String key) {
        byte[] value = kvGet(key);
        return value == null ? null : new String(value, StandardCharsets.UTF_8);
    }

    /** Stores {@code value} under {@code key}, expiring after {@code ttlMs} (0: never). */
    public abstract void kvPut(String key, byte[] value, long ttlMs);

    /** Stores {@code value} under {@code key}. */
    public void kvPut(String key, byte[] value) {
        kvPut(key, value, 0);
    }

    /** Stores UTF-8 text under {@code key}, expiring after {@code ttlMs} (0: never). */
    public void kvPut(String key, String value, long ttlMs) {
        kvPut(key, value.getBytes(StandardCharsets.UTF_8), ttlMs);
    }

    /** Stores UTF-8 text under {@code key}. */
    public void kvPut(String key, String value) {
        kvPut(key, value, 0);
    }

    /** Deletes {@code key}; deleting a missing key is not an error. */
    public abstract void kvDelete(String key);

    /** Publishes {@code payload} on {@code subject} (an {@code events.} subject). */
    public abstract void publish(String subject, byte[] payload);

    /** Publishes UTF-8 text on {@code subject}. */
    public void publish(String subject, String payload) {
        publish(subject, payload.getBytes(StandardCharsets.UTF_8));
    }
}
