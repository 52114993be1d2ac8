//! temporary probe (deleted before hand-off)
fn main() {
    let t = "[[components]]\n".repeat(40);
    println!("{}", mcp_types::parse_definition("x.toml", &t).unwrap_err());
}
