// Hello.java: the hello example in Java: greets a name with the config's greeting word and counts each name's visits in the function's state.
package hello;

import java.nio.charset.StandardCharsets;
import java.util.Map;
import squall.Context;
import squall.JsonHandler;

public class Hello implements JsonHandler {
    /** Names are bounded so that their state key stays well under the 256 bytes a key may have. */
    static final int MAX_NAME_BYTES = 64;

    /**
     * The state key of a name's counter: {@code visits/} and the name's UTF-8 bytes, each byte
     * that is not a letter, digit, {@code _}, {@code .} or {@code -} written as {@code =XX}
     * ("Zoë Ng" is {@code visits/Zo=C3=AB=20Ng}): readable, and never two names on one key.
     */
    static String visitsKey(String name) {
        StringBuilder key = new StringBuilder("visits/");
        for (byte b : name.getBytes(StandardCharsets.UTF_8)) {
            char c = (char) (b & 0xff);
            boolean plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
                || c == '_' || c == '.' || c == '-';
            key.append(plain ? String.valueOf(c) : String.format("=%02X", b & 0xff));
        }
        return key.toString();
    }

    /** {@code {"name": "Ada"}} → {@code {"greeting": "Hello, Ada!", "visits": 3}}. */
    @Override
    public Object handle(Context ctx, Object event) {
        String name = "world";
        if (event instanceof Map<?, ?> map && map.get("name") instanceof String given && !given.isBlank()) {
            name = given.strip();
        }
        if (name.getBytes(StandardCharsets.UTF_8).length > MAX_NAME_BYTES) {
            throw new IllegalArgumentException("a name is at most " + MAX_NAME_BYTES + " bytes of UTF-8");
        }
        Object word = ctx.config().getOrDefault("greeting", "Hello");
        // Read, add one, write: two calls for one name at the same instant can both read the
        // same count (one call at a time per process, but a fleet has several).
        String key = visitsKey(name);
        String seen = ctx.kvGetText(key);
        long visits = seen == null ? 1 : Long.parseLong(seen) + 1;
        ctx.kvPut(key, Long.toString(visits));
        ctx.info("hello: greeting " + name + " (visit " + visits + ")");
        return Map.of("greeting", word + ", " + name + "!", "visits", visits);
    }
}
