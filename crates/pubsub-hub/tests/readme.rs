//! The README's library example is `examples/readme.rs` (which `cargo test` compiles):
//! this checks the README still shows exactly that code.

#[test]
fn readme_shows_the_compiled_example() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).expect("README.md");
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/readme.rs"))
            .expect("examples/readme.rs");
    let shown = readme
        .split_once("```rust\n")
        .and_then(|(_, rest)| rest.split_once("```\n"))
        .map(|(block, _)| block)
        .expect("a rust block in the README");
    let compiled = example
        .split_once("// README example begins\n")
        .and_then(|(_, rest)| rest.split_once("// README example ends\n"))
        .map(|(code, _)| code)
        .expect("the markers in examples/readme.rs");
    assert_eq!(shown, compiled, "README.md and examples/readme.rs differ");
}
