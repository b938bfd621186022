//! `BUILD_COMMIT` for the `build_info` metric: the `BUILD_COMMIT` variable when the build sets it
//! (a container build without `.git`), else `git rev-parse`, else `unknown`.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=BUILD_COMMIT");
    let commit = std::env::var("BUILD_COMMIT").ok().or_else(|| {
        let git = |args: &[&str]| {
            Command::new("git")
                .args(args)
                .output()
                .ok()
                .filter(|output| output.status.success())
                .and_then(|output| String::from_utf8(output.stdout).ok())
                .map(|text| text.trim().to_owned())
        };
        if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
            println!("cargo:rerun-if-changed={dir}/HEAD");
            // A branch's commit is in its ref file, or in packed-refs once git packed it.
            if let Some(reference) = git(&["symbolic-ref", "-q", "HEAD"]) {
                let loose = format!("{dir}/{reference}");
                if std::path::Path::new(&loose).exists() {
                    println!("cargo:rerun-if-changed={loose}");
                } else {
                    println!("cargo:rerun-if-changed={dir}/packed-refs");
                }
            }
        }
        git(&["rev-parse", "--short=12", "HEAD"])
    });
    println!(
        "cargo:rustc-env=BUILD_COMMIT={}",
        commit.unwrap_or_else(|| "unknown".to_owned())
    );
}
