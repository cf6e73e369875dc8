// squall.LogStream: System.out and System.err, routed to the logs of the call the thread runs.
package squall;

import java.io.OutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.function.ObjIntConsumer;

/**
 * The process's {@code System.out} ({@code INFO}) and {@code System.err} ({@code WARN}) once the
 * runtime starts: bytes written on a thread that runs a call go to that call's sink (its
 * context, which logs whole lines), anything else to the process's own stream.
 *
 * <p>Internal to the runtime. {@link #SINKS} is public and typed with JDK types only, because
 * every copy of the runtime library in a process defines its own SDK classes but shares these
 * streams: a copy that finds them installed reaches the field by reflection.
 */
public final class LogStream extends PrintStream {
    /** The sink of the call each thread runs, if any. */
    public static final ThreadLocal<ObjIntConsumer<byte[]>> SINKS = new ThreadLocal<>();

    LogStream(int level, PrintStream fallback) {
        super(new Router(level, fallback), true, StandardCharsets.UTF_8);
    }

    private static final class Router extends OutputStream {
        private final int level;
        private final PrintStream fallback;

        Router(int level, PrintStream fallback) {
            this.level = level;
            this.fallback = fallback;
        }

        @Override
        public void write(int b) {
            write(new byte[] {(byte) b}, 0, 1);
        }

        @Override
        public void write(byte[] bytes, int offset, int length) {
            ObjIntConsumer<byte[]> sink = SINKS.get();
            if (sink == null) {
                fallback.write(bytes, offset, length);
            } else {
                sink.accept(Arrays.copyOfRange(bytes, offset, offset + length), level);
            }
        }

        @Override
        public void flush() {
            if (SINKS.get() == null) {
                fallback.flush();
            }
        }
    }
}
