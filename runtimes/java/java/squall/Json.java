// squall.Json: a small JSON reader and writer over plain Java collections.
package squall;

import java.lang.reflect.Array;
import java.lang.reflect.RecordComponent;
import java.math.BigDecimal;
import java.math.BigInteger;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collection;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;

/**
 * JSON without libraries.
 *
 * <p>{@link #parse(String)} reads objects as {@code LinkedHashMap<String, Object>} (keys in
 * order), arrays as {@code ArrayList<Object>}, strings as {@code String}, integers as {@code
 * Long} (or {@code Double} beyond a long's range), other numbers as {@code Double}, booleans as
 * {@code Boolean} and {@code null} as {@code null}.
 *
 * <p>{@link #write(Object)} writes those back, plus any {@code Map} (keys as strings), {@code
 * Collection}, array, {@code Number}, {@code Character}, {@code Optional}, {@code Enum} (its
 * name) and {@code record} (its components as an object). A {@code byte[]} is written as a list
 * of numbers. NaN and infinities, and other types, are an {@code IllegalArgumentException}.
 */
public final class Json {
    private Json() {}

    /** Parses JSON text; throws {@code IllegalArgumentException} naming the offset of an error. */
    public static Object parse(String text) {
        Parser parser = new Parser(text);
        parser.space();
        Object value = parser.value(0);
        parser.space();
        if (parser.at < text.length()) {
            throw parser.error("unexpected text after the value");
        }
        return value;
    }

    /** Parses UTF-8 JSON bytes. */
    public static Object parse(byte[] json) {
        return parse(new String(json, StandardCharsets.UTF_8));
    }

    /** Writes a value as compact JSON. */
    public static String write(Object value) {
        StringBuilder out = new StringBuilder();
        write(out, value, 0);
        return out.toString();
    }

    /** Writes a value as compact JSON, UTF-8 encoded. */
    public static byte[] writeBytes(Object value) {
        return write(value).getBytes(StandardCharsets.UTF_8);
    }

    /** The parsed value as an object, or an empty map when it is not one. */
    @SuppressWarnings("unchecked")
    static Map<String, Object> object(String json) {
        if (json == null || json.isEmpty()) {
            return new LinkedHashMap<>();
        }
        try {
            Object value = parse(json);
            if (value instanceof Map) {
                return (Map<String, Object>) value;
            }
        } catch (IllegalArgumentException ignored) {
            // The platform's own metadata never fails a function: invalid reads as empty.
        }
        return new LinkedHashMap<>();
    }

    private static final int MAX_DEPTH = 512;

    private static void write(StringBuilder out, Object value, int depth) {
        if (depth > MAX_DEPTH) {
            throw new IllegalArgumentException("value nested too deeply (a cycle?) to write as JSON");
        }
        if (value == null) {
            out.append("null");
        } else if (value instanceof String) {
            string(out, (String) value);
        } else if (value instanceof Boolean) {
            out.append(value);
        } else if (value instanceof Double || value instanceof Float) {
            double number = ((Number) value).doubleValue();
            if (Double.isNaN(number) || Double.isInfinite(number)) {
                throw new IllegalArgumentException("JSON cannot hold " + number);
            }
            if (number == Math.rint(number) && Math.abs(number) < 1e15) {
                out.append((long) number).append(".0");
            } else {
                out.append(number);
            }
        } else if (value instanceof BigDecimal) {
            out.append(((BigDecimal) value).toString());
        } else if (value instanceof Number) {
            out.append(value);
        } else if (value instanceof Character) {
            string(out, value.toString());
        } else if (value instanceof Map) {
            out.append('{');
            boolean first = true;
            for (Map.Entry<?, ?> entry : ((Map<?, ?>) value).entrySet()) {
                if (!first) {
                    out.append(',');
                }
                first = false;
                string(out, String.valueOf(entry.getKey()));
                out.append(':');
                write(out, entry.getValue(), depth + 1);
            }
            out.append('}');
        } else if (value instanceof Collection) {
            out.append('[');
            boolean first = true;
            for (Object item : (Collection<?>) value) {
                if (!first) {
                    out.append(',');
                }
                first = false;
                write(out, item, depth + 1);
            }
            out.append(']');
        } else if (value.getClass().isArray()) {
            out.append('[');
            int length = Array.getLength(value);
            for (int i = 0; i < length; i++) {
                if (i > 0) {
                    out.append(',');
                }
                write(out, Array.get(value, i), depth + 1);
            }
            out.append(']');
        } else if (value instanceof Optional) {
            write(out, ((Optional<?>) value).orElse(null), depth + 1);
        } else if (value instanceof Enum) {
            string(out, ((Enum<?>) value).name());
        } else if (value instanceof WebResponse) {
            write(out, ((WebResponse) value).toMap(), depth + 1);
        } else if (value.getClass().isRecord()) {
            Map<String, Object> fields = new LinkedHashMap<>();
            for (RecordComponent component : value.getClass().getRecordComponents()) {
                try {
                    java.lang.reflect.Method accessor = component.getAccessor();
                    accessor.setAccessible(true);
                    fields.put(component.getName(), accessor.invoke(value));
                } catch (ReflectiveOperationException | RuntimeException error) {
                    throw new IllegalArgumentException(
                            "cannot read " + value.getClass().getName() + "." + component.getName(), error);
                }
            }
            write(out, fields, depth + 1);
        } else {
            throw new IllegalArgumentException(
                    "cannot write a " + value.getClass().getName() + " as JSON");
        }
    }

    private static void string(StringBuilder out, String text) {
        out.append('"');
        for (int i = 0; i < text.length(); i++) {
            char c = text.charAt(i);
            switch (c) {
                case '"': out.append("\\\""); break;
                case '\\': out.append("\\\\"); break;
                case '\n': out.append("\\n"); break;
                case '\r': out.append("\\r"); break;
                case '\t': out.append("\\t"); break;
                case '\b': out.append("\\b"); break;
                case '\f': out.append("\\f"); break;
                default:
                    if (c < 0x20 || c == 0x2028 || c == 0x2029) {
                        out.append(String.format("\\u%04x", (int) c));
                    } else {
                        out.append(c);
                    }
            }
        }
        out.append('"');
    }

    /** A recursive-descent reader over one text. */
    private static final class Parser {
        private final String text;
        private int at;

        Parser(String text) {
            this.text = text;
        }

        IllegalArgumentException error(String message) {
            return new IllegalArgumentException("invalid JSON at offset " + at + ": " + message);
        }

        void space() {
            while (at < text.length()) {
                char c = text.charAt(at);
                if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
                    return;
                }
                at++;
            }
        }

        Object value(int depth) {
            if (depth > MAX_DEPTH) {
                throw error("nested too deeply");
            }
            if (at >= text.length()) {
                throw error("unexpected end");
            }
            char c = text.charAt(at);
            switch (c) {
                case '{': return object(depth);
                case '[': return array(depth);
                case '"': return string();
                case 't': return literal("true", Boolean.TRUE);
                case 'f': return literal("false", Boolean.FALSE);
                case 'n': return literal("null", null);
                default:
                    if (c == '-' || (c >= '0' && c <= '9')) {
                        return number();
                    }
                    throw error("unexpected character '" + c + "'");
            }
        }

        Object literal(String word, Object value) {
            if (!text.startsWith(word, at)) {
                throw error("expected " + word);
            }
            at += word.length();
            return value;
        }

        Map<String, Object> object(int depth) {
            Map<String, Object> map = new LinkedHashMap<>();
            at++;
            space();
            if (at < text.length() && text.charAt(at) == '}') {
                at++;
                return map;
            }
            while (true) {
                space();
                if (at >= text.length() || text.charAt(at) != '"') {
                    throw error("expected a string key");
                }
                String key = string();
                space();
                expect(':');
                space();
                map.put(key, value(depth + 1));
                space();
                if (at < text.length() && text.charAt(at) == ',') {
                    at++;
                    continue;
                }
                expect('}');
                return map;
            }
        }

        List<Object> array(int depth) {
            List<Object> list = new ArrayList<>();
            at++;
            space();
            if (at < text.length() && text.charAt(at) == ']') {
                at++;
                return list;
            }
            while (true) {
                space();
                list.add(value(depth + 1));
                space();
                if (at < text.length() && text.charAt(at) == ',') {
                    at++;
                    continue;
                }
                expect(']');
                return list;
            }
        }

        void expect(char c) {
            if (at >= text.length() || text.charAt(at) != c) {
                throw error("expected '" + c + "'");
            }
            at++;
        }

        String string() {
            at++;
            StringBuilder out = null;
            int start = at;
            while (true) {
                if (at >= text.length()) {
                    throw error("unterminated string");
                }
                char c = text.charAt(at);
                if (c == '"') {
                    String tail = text.substring(start, at);
                    at++;
                    return out == null ? tail : out.append(tail).toString();
                }
                if (c < 0x20) {
                    throw error("control character in a string");
                }
                if (c != '\\') {
                    at++;
                    continue;
                }
                if (out == null) {
                    out = new StringBuilder();
                }
                out.append(text, start, at);
                at++;
                if (at >= text.length()) {
                    throw error("unterminated escape");
                }
                char escaped = text.charAt(at++);
                switch (escaped) {
                    case '"': out.append('"'); break;
                    case '\\': out.append('\\'); break;
                    case '/': out.append('/'); break;
                    case 'b': out.append('\b'); break;
                    case 'f': out.append('\f'); break;
                    case 'n': out.append('\n'); break;
                    case 'r': out.append('\r'); break;
                    case 't': out.append('\t'); break;
                    case 'u':
                        if (at + 4 > text.length()) {
                            throw error("short \\u escape");
                        }
                        try {
                            out.append((char) Integer.parseInt(text.substring(at, at + 4), 16));
                        } catch (NumberFormatException bad) {
                            throw error("bad \\u escape");
                        }
                        at += 4;
                        break;
                    default:
                        throw error("bad escape \\" + escaped);
                }
                start = at;
            }
        }

        Object number() {
            int start = at;
            if (text.charAt(at) == '-') {
                at++;
            }
            boolean integer = true;
            if (!digits()) {
                throw error("expected a digit");
            }
            if (at < text.length() && text.charAt(at) == '.') {
                integer = false;
                at++;
                if (!digits()) {
                    throw error("expected a digit after '.'");
                }
            }
            if (at < text.length() && (text.charAt(at) == 'e' || text.charAt(at) == 'E')) {
                integer = false;
                at++;
                if (at < text.length() && (text.charAt(at) == '+' || text.charAt(at) == '-')) {
                    at++;
                }
                if (!digits()) {
                    throw error("expected a digit in the exponent");
                }
            }
            String literal = text.substring(start, at);
            if (integer) {
                try {
                    return Long.parseLong(literal);
                } catch (NumberFormatException tooBig) {
                    return new BigInteger(literal).doubleValue();
                }
            }
            return Double.parseDouble(literal);
        }

        boolean digits() {
            int start = at;
            while (at < text.length() && text.charAt(at) >= '0' && text.charAt(at) <= '9') {
                at++;
            }
            return at > start;
        }
    }
}
