// squall.CallContext: the platform's context for one call, over the runtime's native methods.
package squall;

import java.io.ByteArrayOutputStream;
import java.io.FileDescriptor;
import java.io.FileOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.function.ObjIntConsumer;

/**
 * The context of one platform invocation. The native methods are the runtime library's (bound
 * with RegisterNatives); they find the call's host context through the calling thread, so this
 * object holds only what Java needs: the owning thread, whether the call has ended, and partial
 * lines written to {@code System.out}/{@code System.err}.
 *
 * <p>As the sink of {@link LogStream} it receives what the call's thread prints.
 */
final class CallContext extends Context implements ObjIntConsumer<byte[]> {
    private static volatile PrintStream stderr;

    private final Thread owner = Thread.currentThread();
    private boolean ended;
    private ByteArrayOutputStream[] partial;

    private void active() {
        if (ended) {
            throw new IllegalStateException(
                    "this context's invocation has ended; use the context only during its call");
        }
        if (Thread.currentThread() != owner) {
            throw new IllegalStateException(
                    "this context belongs to thread " + owner.getName() + "; use it only on its call's thread");
        }
    }

    /** Ends the call: partial output lines are logged, later uses throw. */
    void end() {
        if (partial != null) {
            for (int level = 0; level < partial.length; level++) {
                ByteArrayOutputStream rest = partial[level];
                if (rest != null && rest.size() > 0) {
                    nLog(level, rest.toString(StandardCharsets.UTF_8));
                }
            }
            partial = null;
        }
        ended = true;
    }

    @Override public String functionName() { active(); return nFunctionName(); }
    @Override public String invocationId() { active(); return nInvocationId(); }
    @Override public int attempt() { active(); return nAttempt(); }
    @Override public long deadlineMs() { active(); return nDeadlineMs(); }
    @Override public String traceparent() { active(); return nTraceparent(); }
    @Override public String configJson() { active(); return nConfig(); }
    @Override public String triggerJson() { active(); return nTrigger(); }
    @Override public boolean cancelled() { active(); return nCancelled(); }
    @Override public byte[] kvGet(String key) { active(); return nKvGet(key); }

    @Override
    public void kvPut(String key, byte[] value, long ttlMs) {
        active();
        nKvPut(key, value, Math.max(0, ttlMs));
    }

    @Override
    public void kvDelete(String key) {
        active();
        nKvDelete(key);
    }

    @Override
    public void publish(String subject, byte[] payload) {
        active();
        nPublish(subject, payload);
    }

    @Override
    public void streamWrite(byte[] chunk) {
        active();
        nStreamWrite(chunk);
    }

    /** Logs through the host; after the call, or from another thread, to standard error. */
    @Override
    public void log(int level, String message) {
        String text = String.valueOf(message);
        if (!ended && Thread.currentThread() == owner) {
            nLog(level, text);
            return;
        }
        PrintStream out = stderr;
        if (out == null) {
            out = new PrintStream(new FileOutputStream(FileDescriptor.err), true, StandardCharsets.UTF_8);
            stderr = out;
        }
        out.println("level " + level + " (outside its invocation): " + text);
    }

    /** Bytes printed on the call's thread: whole lines are logged at {@code level}. */
    @Override
    public void accept(byte[] chunk, int level) {
        if (ended || level < 1 || level > TRACE) {
            return;
        }
        if (partial == null) {
            partial = new ByteArrayOutputStream[TRACE + 1];
        }
        int start = 0;
        for (int i = 0; i < chunk.length; i++) {
            if (chunk[i] != '\n') {
                continue;
            }
            ByteArrayOutputStream rest = partial[level];
            String line;
            if (rest != null && rest.size() > 0) {
                rest.write(chunk, start, i - start);
                line = rest.toString(StandardCharsets.UTF_8);
                rest.reset();
            } else {
                line = new String(chunk, start, i - start, StandardCharsets.UTF_8);
            }
            if (line.endsWith("\r")) {
                line = line.substring(0, line.length() - 1);
            }
            nLog(level, line);
            start = i + 1;
        }
        if (start < chunk.length) {
            if (partial[level] == null) {
                partial[level] = new ByteArrayOutputStream();
            }
            partial[level].write(chunk, start, chunk.length - start);
        }
    }

    static native String nFunctionName();
    static native String nInvocationId();
    static native int nAttempt();
    static native long nDeadlineMs();
    static native String nTraceparent();
    static native String nConfig();
    static native String nTrigger();
    static native void nLog(int level, String message);
    static native boolean nCancelled();
    static native void nStreamWrite(byte[] chunk);
    static native byte[] nKvGet(String key);
    static native void nKvPut(String key, byte[] value, long ttlMs);
    static native void nKvDelete(String key);
    static native void nPublish(String subject, byte[] payload);
}
