//! The README's registration programs are the runtime crates'
//! `examples/register.rs` (compiled by `cargo clippy --all-targets`), so
//! the README cannot drift from code that builds.

use std::path::Path;

/// An example file without its leading `//!` comment and blank lines.
fn program(runtime: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../runtime-{runtime}/examples/register.rs"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut program = String::new();
    for line in text.lines().skip_while(|l| l.starts_with("//!") || l.is_empty()) {
        program.push_str(line);
        program.push('\n');
    }
    program
}

/// The README's ```rust blocks.
fn rust_blocks(readme: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in readme.lines() {
        match (&mut current, line) {
            (None, "```rust") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), line) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

#[test]
fn the_readme_shows_each_runtimes_register_example_verbatim() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap();
    let blocks = rust_blocks(&readme);
    for runtime in ["tokio", "smol", "blocking"] {
        let program = program(runtime);
        assert!(program.contains(&format!("sipline_{runtime}::bind")), "{runtime}: not its own runtime");
        assert!(
            blocks.contains(&program),
            "README.md has no ```rust block equal to runtime-{runtime}/examples/register.rs (after its //! header):\n{program}"
        );
        let run = format!("cargo run -p sipline-{runtime} --example register -- ");
        assert!(readme.contains(&run), "README.md does not say how to run it: {run}");
    }
}
