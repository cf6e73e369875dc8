// squall.Engine: the runtime's Java half: installing, opening bundles, calls, checks and tests.
package squall;

import java.io.File;
import java.io.IOException;
import java.io.PrintStream;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.lang.reflect.Constructor;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.lang.reflect.Modifier;
import java.net.URL;
import java.net.URLClassLoader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.security.CodeSource;
import java.util.ArrayList;
import java.util.Base64;
import java.util.Comparator;
import java.util.Enumeration;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.ObjIntConsumer;
import java.util.jar.JarEntry;
import java.util.jar.JarFile;
import java.util.stream.Stream;

/**
 * Called by the runtime library through JNI; internal to the runtime. Each copy of the library
 * defines its own SDK classes (this one included) in a class loader of its own, so that its
 * native methods are its own; the process-wide pieces (the exit guard, {@code System.out} and
 * {@code System.err}) are installed by the first copy and found by the others.
 */
final class Engine {
    private static final byte[] EMPTY = new byte[0];
    private static final String MANIFEST = "squall-bundle.json";

    /** The streams' sink per thread: this copy's or the first copy's {@link LogStream#SINKS}. */
    private static ThreadLocal<ObjIntConsumer<byte[]>> sinks = LogStream.SINKS;

    private Engine() {}

    /** An opened bundle: its handler instance and the loader of its classes. */
    static final class Bundle {
        final Object handler;
        final boolean json;
        final ClassLoader loader;

        Bundle(Object handler, ClassLoader loader) {
            this.handler = handler;
            this.json = handler instanceof JsonHandler;
            this.loader = loader;
        }
    }

    /** What a call (or a test run) came to: 0 ok, 1 error, 2 retry; the output or the message. */
    static final class Outcome {
        final int status;
        final byte[] body;
        final long afterMs;

        Outcome(int status, byte[] body, long afterMs) {
            this.status = status;
            this.body = body;
            this.afterMs = afterMs;
        }

        static Outcome of(int status, String text) {
            return new Outcome(status, text.getBytes(StandardCharsets.UTF_8), 0);
        }
    }

    // ---- installing ---------------------------------------------------------------------------

    /** Installs the exit guard and the log streams once per process, or finds the installed ones. */
    @SuppressWarnings({"unchecked", "removal"})
    static void install() throws ReflectiveOperationException {
        // An interned string is one object in the whole JVM, whichever loader asks: copies of the
        // runtime starting on two threads install one after the other.
        synchronized ("squall.runtime.install".intern()) {
            if (System.getSecurityManager() == null) {
                // This prints a deprecation warning on the JVM's initial standard error, which
                // the runtime library points at /dev/null for the duration of install().
                System.setSecurityManager(new ExitGuard());
            }
            PrintStream out = System.out;
            if (out.getClass().getName().equals(LogStream.class.getName())) {
                sinks = (ThreadLocal<ObjIntConsumer<byte[]>>) out.getClass().getField("SINKS").get(null);
            } else {
                System.setOut(new LogStream(Context.INFO, out));
                System.setErr(new LogStream(Context.WARN, System.err));
            }
        }
    }

    // ---- opening and checking -----------------------------------------------------------------

    private static URLClassLoader loader(String[] classpath) throws IOException {
        URL[] urls = new URL[classpath.length];
        for (int i = 0; i < classpath.length; i++) {
            urls[i] = new File(classpath[i]).toURI().toURL();
        }
        return new URLClassLoader(urls, Engine.class.getClassLoader());
    }

    /** Loads the handler class (running its static initialiser) and makes its one instance. */
    static Bundle open(String[] classpath, String className) throws Exception {
        URLClassLoader loader = loader(classpath);
        Class<?> handlerClass;
        try {
            handlerClass = Class.forName(className, true, loader);
        } catch (ClassNotFoundException missing) {
            throw new IllegalArgumentException("class " + className + " not found in the bundle");
        } catch (ExceptionInInitializerError failed) {
            Throwable cause = failed.getCause() == null ? failed : failed.getCause();
            throw new IllegalArgumentException(
                    "the static initialiser of " + className + " failed: " + trace(cause));
        } catch (LinkageError broken) {
            throw new IllegalArgumentException("class " + className + " cannot be loaded: " + broken);
        }
        String problem = handlerProblem(handlerClass);
        if (problem != null) {
            throw new IllegalArgumentException(problem);
        }
        Object handler;
        try {
            Constructor<?> constructor = handlerClass.getDeclaredConstructor();
            constructor.setAccessible(true);
            handler = constructor.newInstance();
        } catch (InvocationTargetException failed) {
            throw new IllegalArgumentException(
                    "the constructor of " + className + " failed: " + trace(failed.getCause()));
        }
        return new Bundle(handler, loader);
    }

    /** Why a class cannot be a handler, or null. Runs none of its code. */
    private static String handlerProblem(Class<?> handlerClass) {
        String name = handlerClass.getName();
        if (!Handler.class.isAssignableFrom(handlerClass) && !JsonHandler.class.isAssignableFrom(handlerClass)) {
            return name + " does not implement squall.Handler or squall.JsonHandler";
        }
        if (handlerClass.isInterface() || Modifier.isAbstract(handlerClass.getModifiers())) {
            return name + " is abstract; the handler must be a concrete class";
        }
        try {
            handlerClass.getDeclaredConstructor();
        } catch (NoSuchMethodException missing) {
            return name + " has no constructor without arguments";
        }
        return null;
    }

    /** The bundle-relative file a class came from, or the manifest when it did not come from one. */
    private static String source(Class<?> found, String root) {
        CodeSource code = found.getProtectionDomain().getCodeSource();
        if (code == null || code.getLocation() == null) {
            return MANIFEST;
        }
        try {
            Path path = Paths.get(code.getLocation().toURI());
            Path relative = Paths.get(root).relativize(path);
            String text = relative.toString();
            return path.toFile().isDirectory() ? text + "/" : text;
        } catch (Exception unusual) {
            return MANIFEST;
        }
    }

    /** Validates a bundle's classes without running them; the problems as {@code FILE: message}. */
    static String[] check(String root, String[] classpath, String className) throws IOException {
        List<String> problems = new ArrayList<>();
        for (String entry : classpath) {
            if (entry.endsWith(".jar")) {
                try (JarFile jar = new JarFile(entry)) {
                    jar.size();
                } catch (IOException broken) {
                    problems.add(relative(root, entry) + ": not a valid jar: " + broken.getMessage());
                }
            }
        }
        if (!problems.isEmpty()) {
            return problems.toArray(new String[0]);
        }
        try (URLClassLoader loader = loader(classpath)) {
            String where = classpath.length == 1 ? relative(root, classpath[0]) : MANIFEST;
            Class<?> handlerClass;
            try {
                handlerClass = Class.forName(className, false, loader);
            } catch (ClassNotFoundException missing) {
                problems.add(where + ": class " + className + " not found");
                return problems.toArray(new String[0]);
            } catch (LinkageError broken) {
                problems.add(where + ": class " + className + " cannot be loaded: " + broken);
                return problems.toArray(new String[0]);
            }
            String problem;
            try {
                problem = handlerProblem(handlerClass);
            } catch (LinkageError broken) {
                problem = className + " cannot be loaded: " + broken;
            }
            if (problem != null) {
                problems.add(source(handlerClass, root) + ": " + problem);
            }
        }
        return problems.toArray(new String[0]);
    }

    private static String relative(String root, String path) {
        String relative = Paths.get(root).relativize(Paths.get(path)).toString();
        return new File(path).isDirectory() ? relative + "/" : relative;
    }

    // ---- calls --------------------------------------------------------------------------------

    /** Runs one call on this thread. */
    static Outcome invoke(Bundle bundle, byte[] input, boolean web) {
        CallContext ctx = new CallContext();
        Thread thread = Thread.currentThread();
        ClassLoader savedLoader = thread.getContextClassLoader();
        ObjIntConsumer<byte[]> savedSink = sinks.get();
        thread.setContextClassLoader(bundle.loader);
        sinks.set(ctx);
        try {
            if (!bundle.json) {
                byte[] output = ((Handler) bundle.handler).handle(ctx, input);
                return new Outcome(0, output == null ? EMPTY : output, 0);
            }
            Object event = web ? webEvent(ctx, input) : event(input);
            Object result = ((JsonHandler) bundle.handler).handle(ctx, event);
            if (result instanceof byte[]) {
                return new Outcome(0, (byte[]) result, 0);
            }
            return new Outcome(0, Json.writeBytes(result), 0);
        } catch (Throwable error) {
            return failure(ctx, error);
        } finally {
            ctx.end();
            sinks.set(savedSink);
            thread.setContextClassLoader(savedLoader);
            // An interrupt the handler left behind must not reach the next call on this thread.
            Thread.interrupted();
        }
    }

    /** The event of a JSON call: the input parsed, null when empty, the bytes when not JSON. */
    private static Object event(byte[] input) {
        if (input.length == 0) {
            return null;
        }
        try {
            return Json.parse(input);
        } catch (IllegalArgumentException notJson) {
            return input;
        }
    }

    /** The event of a web call: the request from the trigger, with its body, as a function URL's. */
    private static Object webEvent(Context ctx, byte[] body) {
        Map<String, Object> event = new LinkedHashMap<>(ctx.trigger());
        putIfEmpty(event, "method", "POST");
        putIfEmpty(event, "path", "/");
        event.putIfAbsent("raw_query", "");
        event.putIfAbsent("query", new LinkedHashMap<>());
        event.putIfAbsent("headers", new LinkedHashMap<>());
        event.putIfAbsent("remote_addr", "");
        java.nio.charset.CharsetDecoder decoder = StandardCharsets.UTF_8.newDecoder();
        try {
            event.put("body", decoder.decode(java.nio.ByteBuffer.wrap(body)).toString());
            event.put("isBase64Encoded", false);
        } catch (java.nio.charset.CharacterCodingException binary) {
            event.put("body", Base64.getEncoder().encodeToString(body));
            event.put("isBase64Encoded", true);
        }
        return event;
    }

    private static void putIfEmpty(Map<String, Object> event, String key, String value) {
        Object present = event.get(key);
        if (!(present instanceof String) || ((String) present).isEmpty()) {
            event.put(key, value);
        }
    }

    private static Outcome failure(CallContext ctx, Throwable error) {
        if (error instanceof Retry) {
            String message = error.getMessage();
            return new Outcome(2, bytes(message == null || message.isEmpty() ? "retry requested" : message),
                    ((Retry) error).afterMs());
        }
        try {
            ctx.log(Context.ERROR, trace(error));
        } catch (Throwable ignored) {
            // The failure itself matters more than its log line.
        }
        int status = error instanceof HostException && ((HostException) error).retryable() ? 2 : 1;
        return new Outcome(status, bytes(describe(error)), 0);
    }

    /** {@code ExceptionClass: message}, or the class alone without a message. */
    private static String describe(Throwable error) {
        String message;
        try {
            message = error.getMessage();
        } catch (Throwable broken) {
            message = null;
        }
        String name = error.getClass().getName();
        return message == null || message.isEmpty() ? name : name + ": " + message;
    }

    /**
     * The stack trace without the runtime's own frames: in each block (the exception, each cause),
     * the frames from the first of {@code squall.Engine} on, and the JDK frames (reflection,
     * {@code Class.forName}) just above it.
     */
    static String trace(Throwable error) {
        StringWriter text = new StringWriter();
        try {
            error.printStackTrace(new PrintWriter(text));
        } catch (Throwable broken) {
            return describe(error);
        }
        List<String> kept = new ArrayList<>();
        boolean skipping = false;
        for (String line : text.toString().split("\n")) {
            line = line.replace("\r", "");
            String trimmed = line.trim();
            boolean frame = trimmed.startsWith("at ");
            if (frame && trimmed.contains("squall.Engine.")) {
                while (!kept.isEmpty() && kept.get(kept.size() - 1).trim().startsWith("at java.base/")) {
                    kept.remove(kept.size() - 1);
                }
                skipping = true;
                continue;
            }
            if (skipping && (frame || trimmed.startsWith("..."))) {
                continue;
            }
            skipping = false;
            kept.add(line);
        }
        return String.join("\n", kept).stripTrailing();
    }

    private static byte[] bytes(String text) {
        return text.getBytes(StandardCharsets.UTF_8);
    }

    // ---- tests --------------------------------------------------------------------------------

    /** Runs the bundle's test classes: status 0 all passed, 1 a test failed, 2 none could run. */
    static Outcome runTests(String[] classpath) {
        StringBuilder report = new StringBuilder();
        List<String> classes = new ArrayList<>();
        try {
            for (String entry : classpath) {
                testClasses(entry, classes);
            }
        } catch (IOException unreadable) {
            return Outcome.of(2, "the tests could not run: " + unreadable + "\n");
        }
        classes.sort(Comparator.naturalOrder());
        if (classes.isEmpty()) {
            return Outcome.of(2, "found no tests: add classes named *Test with public static void test*() methods\n");
        }
        int passed = 0;
        int failed = 0;
        ClassLoader savedLoader = Thread.currentThread().getContextClassLoader();
        ObjIntConsumer<byte[]> savedSink = sinks.get();
        try (URLClassLoader loader = loader(classpath)) {
            loader.setDefaultAssertionStatus(true);
            Thread.currentThread().setContextClassLoader(loader);
            for (String className : classes) {
                Class<?> testClass;
                try {
                    testClass = Class.forName(className, true, loader);
                } catch (Throwable broken) {
                    Throwable cause = broken instanceof ExceptionInInitializerError && broken.getCause() != null
                            ? broken.getCause() : broken;
                    report.append("FAIL ").append(className).append(": ").append(describe(cause)).append('\n');
                    failed++;
                    continue;
                }
                List<Method> tests = new ArrayList<>();
                for (Method method : testClass.getDeclaredMethods()) {
                    int modifiers = method.getModifiers();
                    if (Modifier.isPublic(modifiers) && Modifier.isStatic(modifiers)
                            && method.getParameterCount() == 0 && method.getName().startsWith("test")) {
                        tests.add(method);
                    }
                }
                tests.sort(Comparator.comparing(Method::getName));
                String simple = testClass.getSimpleName();
                for (Method test : tests) {
                    String name = simple + "." + test.getName();
                    StringBuilder output = new StringBuilder();
                    sinks.set((chunk, level) -> output.append(new String(chunk, StandardCharsets.UTF_8)));
                    Throwable failure = null;
                    try {
                        test.invoke(null);
                    } catch (InvocationTargetException thrown) {
                        failure = thrown.getCause();
                    } catch (Throwable unusual) {
                        failure = unusual;
                    } finally {
                        sinks.set(savedSink);
                    }
                    if (failure == null) {
                        report.append("PASS ").append(name).append('\n');
                        passed++;
                    } else {
                        report.append("FAIL ").append(name).append(": ").append(describe(failure)).append('\n');
                        for (String line : trace(failure).split("\n")) {
                            report.append("    ").append(line).append('\n');
                        }
                        if (output.length() > 0) {
                            report.append("    output:\n");
                            for (String line : output.toString().split("\n")) {
                                report.append("    | ").append(line).append('\n');
                            }
                        }
                        failed++;
                    }
                }
            }
        } catch (IOException closing) {
            // Closing the loader failed; the results stand.
        } finally {
            Thread.currentThread().setContextClassLoader(savedLoader);
        }
        if (passed + failed == 0) {
            report.append("found no tests: the *Test classes have no public static void test*() methods\n");
            return Outcome.of(2, report.toString());
        }
        report.append(passed).append(" passed, ").append(failed).append(" failed\n");
        return Outcome.of(failed == 0 ? 0 : 1, report.toString());
    }

    private static void testClasses(String entry, List<String> classes) throws IOException {
        File file = new File(entry);
        if (file.isDirectory()) {
            Path root = file.toPath();
            try (Stream<Path> paths = Files.walk(root)) {
                paths.filter(path -> path.toString().endsWith(".class")).forEach(path -> {
                    String name = root.relativize(path).toString().replace(File.separatorChar, '/');
                    addTestClass(name, classes);
                });
            }
            return;
        }
        try (JarFile jar = new JarFile(file)) {
            Enumeration<JarEntry> entries = jar.entries();
            while (entries.hasMoreElements()) {
                addTestClass(entries.nextElement().getName(), classes);
            }
        }
    }

    private static void addTestClass(String path, List<String> classes) {
        if (!path.endsWith("Test.class") || path.contains("$") || path.startsWith("META-INF/")) {
            return;
        }
        String name = path.substring(0, path.length() - ".class".length()).replace('/', '.');
        if (!classes.contains(name)) {
            classes.add(name);
        }
    }
}
