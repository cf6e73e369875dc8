// squall.Handler: a function that takes the invocation's input bytes and returns its output bytes.
package squall;

/**
 * A function over raw bytes: the invocation's input as it arrived, the output as it leaves.
 *
 * <p>The class named by the bundle's {@code handler} implements this (or {@link JsonHandler}) and
 * has a public no-argument constructor; one instance serves every call of the function, from
 * several threads at once when the function's concurrency allows it.
 */
public interface Handler {
    /**
     * Handles one invocation.
     *
     * @param ctx the invocation's context, valid during this call and on this thread only
     * @param input the input bytes (empty when there were none; a web call's request body)
     * @return the output bytes; {@code null} is read as empty
     * @throws Retry to ask for another attempt; any other exception fails the invocation
     */
    byte[] handle(Context ctx, byte[] input) throws Exception;
}
