// squall.Retry: thrown by a handler to ask the platform for another attempt.
package squall;

/**
 * Thrown by a handler to end the attempt with "retry": the platform runs the invocation again
 * (after {@code afterMs} milliseconds, or its backoff policy's delay when 0) until the
 * function's attempts run out.
 */
public class Retry extends RuntimeException {
    private static final long serialVersionUID = 1L;

    private final long afterMs;

    /** A retry after the function's backoff policy's delay. */
    public Retry() {
        this(0, null);
    }

    /** A retry after {@code afterMs} milliseconds (0: the policy's delay). */
    public Retry(long afterMs) {
        this(afterMs, null);
    }

    /** A retry after {@code afterMs} milliseconds (0: the policy's delay), saying why. */
    public Retry(long afterMs, String message) {
        super(message);
        this.afterMs = Math.max(0, afterMs);
    }

    /** The suggested delay before the next attempt, in milliseconds; 0 lets the policy decide. */
    public long afterMs() {
        return afterMs;
    }
}
