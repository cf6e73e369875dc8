// Hello.java: a Squall function in Java: greets a name and counts its visits in the function's state.
package app;

import java.util.Map;
import squall.Context;
import squall.JsonHandler;

public class Hello implements JsonHandler {
    @Override
    public Object handle(Context ctx, Object event) {
        String name = "world";
        if (event instanceof Map<?, ?> map && map.get("name") instanceof String given && !given.isBlank()) {
            name = given.strip();
        }
        Object greeting = ctx.config().getOrDefault("greeting", "Hello");
        String seen = ctx.kvGetText("visits/" + name.replaceAll("[^A-Za-z0-9_.-]", "_"));
        long visits = seen == null ? 1 : Long.parseLong(seen) + 1;
        ctx.kvPut("visits/" + name.replaceAll("[^A-Za-z0-9_.-]", "_"), Long.toString(visits));
        ctx.info("greeting " + name + " (attempt " + ctx.attempt() + ")");
        return Map.of("message", greeting + ", " + name + "!", "visits", visits);
    }
}
