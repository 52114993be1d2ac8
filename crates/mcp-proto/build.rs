//! Compiles proto/ with protox (no system protoc) into tonic client and server code.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read when the script runs, not baked in when it is compiled: a build script
    // compiled in another checkout sharing the target dir must not read that
    // checkout's protos.
    let root = format!("{}/../../proto", std::env::var("CARGO_MANIFEST_DIR")?);
    let root = root.as_str();
    let files = [
        "mcp/agent/v1/agent.proto",
        "mcp/master/v1/master.proto",
        "mcproxy/admin/v1/admin.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={root}/{file}");
    }
    let fds = protox::compile(files, [root])?;
    // Every RPC of every service, so a test can check that each one is declared where
    // it must be (the master's authorization table, the agent's capabilities).
    let mut rpcs = String::from("/// (package.Service, Method) of every RPC in proto/.\npub const RPCS: &[(&str, &str)] = &[\n");
    for file in &fds.file {
        for service in &file.service {
            for method in &service.method {
                rpcs.push_str(&format!(
                    "    (\"{}.{}\", \"{}\"),\n",
                    file.package(),
                    service.name(),
                    method.name()
                ));
            }
        }
    }
    rpcs.push_str("];\n");
    // Every field of every message, so a test can hold the wire to its one rule:
    // fields are added, never renumbered, renamed, retyped or removed.
    rpcs.push_str(
        "/// (message, number, name, type) of every field in proto/, nested messages included.\npub const FIELDS: &[(&str, i32, &str, &str)] = &[\n",
    );
    for file in &fds.file {
        let mut messages: Vec<(String, _)> = file
            .message_type
            .iter()
            .map(|m| (format!("{}.{}", file.package(), m.name()), m))
            .collect();
        while let Some((name, message)) = messages.pop() {
            for field in &message.field {
                let label = if field.label().as_str_name() == "LABEL_REPEATED" {
                    "repeated "
                } else if field.proto3_optional() {
                    "optional "
                } else {
                    ""
                };
                let kind = match field.type_name() {
                    "" => field
                        .r#type()
                        .as_str_name()
                        .trim_start_matches("TYPE_")
                        .to_lowercase(),
                    named => named.trim_start_matches('.').to_string(),
                };
                rpcs.push_str(&format!(
                    "    (\"{name}\", {}, \"{}\", \"{label}{kind}\"),\n",
                    field.number(),
                    field.name()
                ));
            }
            for nested in &message.nested_type {
                messages.push((format!("{name}.{}", nested.name()), nested));
            }
        }
    }
    rpcs.push_str("];\n");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("rpcs.rs");
    std::fs::write(out, rpcs)?;
    tonic_prost_build::configure()
        .codec_path("crate::codec::SmallCodec")
        .compile_fds(fds)?;
    Ok(())
}
