//! The README's gateway example is `examples/embed.rs` (which `cargo test` compiles): this
//! checks the README still shows exactly that code.

#[test]
fn readme_shows_the_compiled_gateway_example() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).expect("README.md");
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/embed.rs"))
            .expect("examples/embed.rs");
    let section = readme
        .split_once("## The gateway")
        .expect("a gateway section in the README")
        .1;
    let shown = section
        .split_once("```rust\n")
        .and_then(|(_, rest)| rest.split_once("```\n"))
        .map(|(block, _)| block)
        .expect("a rust block in the gateway section");
    let compiled = example
        .split_once("// README example begins\n")
        .and_then(|(_, rest)| rest.split_once("// README example ends\n"))
        .map(|(code, _)| code)
        .expect("the markers in examples/embed.rs");
    assert_eq!(shown, compiled, "README.md and examples/embed.rs differ");
}
