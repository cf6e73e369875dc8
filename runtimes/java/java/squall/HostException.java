// squall.HostException: a host service (state, events, streamed output) failed.
package squall;

/**
 * A host service call failed. {@link #code()} says why: {@code unavailable} (the platform's
 * store did not answer in time; an uncaught one makes the invocation retry), {@code denied},
 * {@code too_large}, {@code invalid}, {@code unsupported} (no host services here) or {@code
 * status N} for a status this runtime does not know.
 */
public class HostException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    private final String code;

    /** A failure with its code and message. */
    public HostException(String code, String message) {
        super(message);
        this.code = code;
    }

    /** Why the call failed: {@code unavailable}, {@code denied}, {@code too_large}, ... */
    public String code() {
        return code;
    }

    /** Whether retrying the invocation later may succeed. */
    public boolean retryable() {
        return "unavailable".equals(code);
    }
}
