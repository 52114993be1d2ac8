//! temporary timing probe (deleted before hand-off)
fn main() {
    let limit = mcp_types::MAX_DEFINITION_BYTES;
    let pats = [
        "[[components]]\n",
        "x\n",
        "a=[\n",
        "[[components.routes]]\n",
        "a = 1\n",
        "= = =\n",
        "[a]\n[a]\n",
        "\"\n",
    ];
    for p in pats {
        let mut t = String::new();
        while t.len() + p.len() <= limit {
            t.push_str(p);
        }
        let start = std::time::Instant::now();
        let r = mcp_types::parse_definition("x.toml", &t);
        let n = r.err().map(|e| e.problems.len()).unwrap_or(0);
        println!("{:?}: {:?} problems={}", p, start.elapsed(), n);
    }
}
