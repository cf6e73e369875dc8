// squall.JsonHandler: a function whose input is parsed as JSON and whose result is written as JSON.
package squall;

/**
 * A function over JSON values, Lambda's model.
 *
 * <p>The {@code event} is the input parsed by {@link Json#parse(String)}: a {@code Map<String,
 * Object>}, {@code List<Object>}, {@code String}, {@code Long} or {@code Double}, {@code
 * Boolean}, or {@code null} when the input is empty. Input that is not JSON arrives as the
 * {@code byte[]} it was. For a web call the event is the request ({@code method}, {@code path},
 * {@code headers}, … with {@code body} and {@code isBase64Encoded}).
 *
 * <p>The result is written as JSON by {@link Json#write(Object)}, except that a {@code byte[]} is
 * sent as it is and a {@link WebResponse} as the function-URL response it describes.
 */
public interface JsonHandler {
    /**
     * Handles one invocation.
     *
     * @param ctx the invocation's context, valid during this call and on this thread only
     * @param event the input parsed as JSON
     * @return the output, written as JSON
     * @throws Retry to ask for another attempt; any other exception fails the invocation
     */
    Object handle(Context ctx, Object event) throws Exception;
}
