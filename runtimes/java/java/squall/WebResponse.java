// squall.WebResponse: a web function's answer, written as Lambda's function-URL response.
package squall;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Base64;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A web function's answer: status, headers, cookies and body. Returned from a {@link
 * JsonHandler} it is sent as {@code {"statusCode", "headers", "cookies", "body",
 * "isBase64Encoded"}}; a {@link Handler} can return {@link #toBytes()}.
 *
 * <pre>{@code
 * return WebResponse.status(201).header("content-type", "text/plain").body("created");
 * }</pre>
 */
public final class WebResponse {
    private final int statusCode;
    private final Map<String, String> headers = new LinkedHashMap<>();
    private final List<String> cookies = new ArrayList<>();
    private String body = "";
    private boolean base64;

    private WebResponse(int statusCode) {
        if (statusCode < 200 || statusCode > 599) {
            throw new IllegalArgumentException("status code " + statusCode + " is not between 200 and 599");
        }
        this.statusCode = statusCode;
    }

    /** An answer with this status and no body yet. */
    public static WebResponse status(int statusCode) {
        return new WebResponse(statusCode);
    }

    /** A 200 with a text body ({@code text/plain; charset=utf-8}). */
    public static WebResponse text(String body) {
        return status(200).header("content-type", "text/plain; charset=utf-8").body(body);
    }

    /** A 200 whose body is {@code value} written as JSON ({@code application/json}). */
    public static WebResponse json(Object value) {
        return status(200).header("content-type", "application/json").body(Json.write(value));
    }

    /** A redirect ({@code 302}) to {@code location}. */
    public static WebResponse redirect(String location) {
        return status(302).header("location", location);
    }

    /** Sets a header (names are sent in lower case). */
    public WebResponse header(String name, String value) {
        headers.put(name.toLowerCase(java.util.Locale.ROOT), value);
        return this;
    }

    /** Adds a {@code Set-Cookie} value, like {@code id=7; Path=/; HttpOnly}. */
    public WebResponse cookie(String setCookie) {
        cookies.add(setCookie);
        return this;
    }

    /** Sets a text body. */
    public WebResponse body(String text) {
        this.body = text == null ? "" : text;
        this.base64 = false;
        return this;
    }

    /** Sets a binary body (sent base64-encoded, as the envelope requires). */
    public WebResponse body(byte[] bytes) {
        this.body = Base64.getEncoder().encodeToString(bytes == null ? new byte[0] : bytes);
        this.base64 = true;
        return this;
    }

    /** The status code. */
    public int statusCode() {
        return statusCode;
    }

    /** The envelope as a map, in the order the platform documents. */
    public Map<String, Object> toMap() {
        Map<String, Object> envelope = new LinkedHashMap<>();
        envelope.put("statusCode", (long) statusCode);
        envelope.put("headers", new LinkedHashMap<>(headers));
        envelope.put("cookies", new ArrayList<>(cookies));
        envelope.put("body", body);
        envelope.put("isBase64Encoded", base64);
        return envelope;
    }

    /** The envelope as JSON text. */
    public String toJson() {
        return Json.write(toMap());
    }

    /** The envelope as UTF-8 JSON bytes. */
    public byte[] toBytes() {
        return toJson().getBytes(StandardCharsets.UTF_8);
    }
}
