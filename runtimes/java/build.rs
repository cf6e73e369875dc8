//! Compiles the Java SDK (`java/squall/*.java`) with `javac --release 17` and packs it, so the
//! library can embed the class files and the SDK jar.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where a JDK's tools are looked for, besides `PATH`: the homes the runtime itself uses.
const HOME_VARIABLES: [&str; 2] = ["SQUALL_JAVA_HOME", "JAVA_HOME"];

fn main() {
    let manifest_dir =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let sources_dir = manifest_dir.join("java").join("squall");
    println!("cargo:rerun-if-changed=java");
    for variable in HOME_VARIABLES {
        println!("cargo:rerun-if-env-changed={variable}");
    }

    let mut sources: Vec<PathBuf> = std::fs::read_dir(&sources_dir)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", sources_dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "java"))
        .collect();
    sources.sort();

    let classes = out_dir.join("classes");
    if classes.exists() {
        std::fs::remove_dir_all(&classes).expect("clearing the old SDK classes");
    }
    std::fs::create_dir_all(&classes).expect("creating the SDK classes folder");

    let javac = tool("javac");
    let status = Command::new(&javac)
        .args([
            "--release",
            "17",
            "-encoding",
            "UTF-8",
            "-Xlint:all",
            "-Werror",
            "-d",
        ])
        .arg(&classes)
        .args(&sources)
        .status()
        .unwrap_or_else(|error| missing(&javac, &error));
    assert!(
        status.success(),
        "javac failed to compile the Java SDK ({status})"
    );

    let jar_path = out_dir.join("squall-sdk.jar");
    let jar = tool("jar");
    let status = Command::new(&jar)
        .arg("--create")
        .arg("--file")
        .arg(&jar_path)
        .arg("-C")
        .arg(&classes)
        .arg(".")
        .status()
        .unwrap_or_else(|error| missing(&jar, &error));
    assert!(
        status.success(),
        "jar failed to pack the Java SDK ({status})"
    );

    let mut class_files = Vec::new();
    collect(&classes, &classes, &mut class_files);
    class_files.sort();
    let mut listing = String::from(
        "/// The SDK's class files: (binary name with slashes, bytes).\npub const SDK_CLASSES: &[(&str, &[u8])] = &[\n",
    );
    for (name, path) in &class_files {
        listing.push_str(&format!(
            "    ({name:?}, include_bytes!({:?})),\n",
            path.display().to_string()
        ));
    }
    listing.push_str("];\n");
    std::fs::write(out_dir.join("sdk_classes.rs"), listing).expect("writing sdk_classes.rs");
    println!(
        "cargo:rustc-env=SQUALL_JAVA_SDK_CLASSES={}",
        classes.display()
    );
    println!("cargo:rustc-env=SQUALL_JAVA_SDK_JAR={}", jar_path.display());
}

/// `name` from a JDK home's `bin/` when one is set, else from `PATH`.
fn tool(name: &str) -> PathBuf {
    for variable in HOME_VARIABLES {
        if let Some(home) = std::env::var_os(variable).filter(|home| !home.is_empty()) {
            let candidate = Path::new(&home).join("bin").join(name);
            if candidate.exists() {
                return candidate;
            }
        }
    }
    PathBuf::from(name)
}

fn missing(tool: &Path, error: &std::io::Error) -> ! {
    panic!(
        "cannot run {}: {error}. The Java runtime's SDK is compiled at build time: install a JDK 17 \
         (Debian: apt-get install openjdk-17-jdk-headless) and put javac and jar on PATH, or set \
         SQUALL_JAVA_HOME or JAVA_HOME to it",
        tool.display()
    )
}

/// Every `.class` file under `dir`, as (binary name with slashes, absolute path).
fn collect(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) {
    for entry in std::fs::read_dir(dir).expect("reading the SDK classes") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            collect(root, &path, out);
        } else if let Some(relative) = path
            .strip_prefix(root)
            .ok()
            .and_then(|relative| relative.to_str())
            .and_then(|relative| relative.strip_suffix(".class"))
        {
            out.push((relative.to_owned(), path.clone()));
        }
    }
}
