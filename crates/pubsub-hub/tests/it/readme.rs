//! One example, three places: the crate docs include `examples/readme.rs` (which `cargo
//! test` compiles, and `cargo test --doc` compiles again as the docs' example); these tests
//! check that both READMEs show exactly that file, and that the crate docs' module map
//! links every public item.

use std::path::Path;

const CRATE: &str = env!("CARGO_MANIFEST_DIR");

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The first ```rust block of a Markdown file.
fn first_rust_block(markdown: &str) -> &str {
    markdown
        .split_once("```rust\n")
        .and_then(|(_, rest)| rest.split_once("```\n"))
        .map(|(block, _)| block)
        .expect("a rust block")
}

#[test]
fn readmes_show_the_compiled_example() {
    let example = read(&Path::new(CRATE).join("examples/readme.rs"));
    for readme in [
        Path::new(CRATE).join("../../README.md"),
        Path::new(CRATE).join("README.md"),
    ] {
        assert_eq!(
            first_rust_block(&read(&readme)),
            example,
            "{} and examples/readme.rs differ",
            readme.display()
        );
    }
}

/// Names of the `pub` items declared at the top level of a module file.
fn public_items(source: &str) -> Vec<String> {
    source
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("pub ")?;
            let rest = [
                "struct ", "enum ", "const ", "static ", "trait ", "type ", "fn ",
            ]
            .iter()
            .find_map(|kind| rest.strip_prefix(kind))?;
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            Some(name)
        })
        .collect()
}

#[test]
fn crate_docs_link_every_public_item() {
    let src = Path::new(CRATE).join("src");
    let lib = read(&src.join("lib.rs"));
    let layout = lib
        .split_once("//! # Layout\n")
        .map(|(_, rest)| rest)
        .expect("a # Layout section in the crate docs");
    let mut checked = 0;
    for entry in std::fs::read_dir(&src).expect("src/") {
        let path = entry.expect("a directory entry").path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        for name in public_items(&read(&path)) {
            assert!(
                layout.contains(&format!("[`{name}`]")),
                "the crate docs' # Layout does not link `{name}` (from {})",
                path.display()
            );
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} public items found");
}
