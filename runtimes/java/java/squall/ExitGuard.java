// squall.ExitGuard: the security manager that refuses System.exit and Runtime.halt.
package squall;

import java.security.Permission;

/**
 * Installed once per process: a function may not end its worker process. Exiting throws a
 * {@code SecurityException}, which fails the call; replacing this manager is refused too.
 * Every other permission is granted.
 */
@SuppressWarnings("removal")
final class ExitGuard extends SecurityManager {
    @Override
    public void checkExit(int status) {
        throw new SecurityException("exit(" + status + ") refused: a function cannot stop its worker process");
    }

    @Override
    public void checkPermission(Permission permission) {
        check(permission);
    }

    @Override
    public void checkPermission(Permission permission, Object context) {
        check(permission);
    }

    private static void check(Permission permission) {
        if (permission instanceof RuntimePermission) {
            String name = permission.getName();
            if (name.startsWith("exitVM")) {
                throw new SecurityException("exit refused: a function cannot stop its worker process");
            }
            if (name.equals("setSecurityManager")) {
                throw new SecurityException("the runtime's security manager cannot be replaced");
            }
        }
    }
}
