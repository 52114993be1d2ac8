//! One rule for hostnames, shared by the SNI parser and the route table, so a
//! name the parser hands over can always be looked up as the table stores it.

/// Longest hostname (RFC 1035, without the trailing dot).
pub const MAX_LEN: usize = 253;
/// Longest label.
pub const MAX_LABEL: usize = 63;

/// Checks `name` as a DNS hostname (letters, digits and `-`, labels of 1 to 63
/// bytes not starting or ending with `-`, at most 253 bytes, no trailing dot, at
/// least two labels, not an IPv4 literal) and returns it lowercased.
pub fn normalize(name: &str) -> Result<String, &'static str> {
    if name.is_empty() {
        return Err("empty hostname");
    }
    if name.len() > MAX_LEN {
        return Err("hostname longer than 253 bytes");
    }
    let lower = name.to_ascii_lowercase();
    let mut labels = 0;
    let mut last = "";
    for label in lower.split('.') {
        check_label(label)?;
        labels += 1;
        last = label;
    }
    if labels < 2 {
        return Err("hostname has a single label");
    }
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return Err("hostname is an IP address or ends in a numeric label");
    }
    Ok(lower)
}

fn check_label(label: &str) -> Result<(), &'static str> {
    if label.is_empty() {
        return Err("empty label in hostname");
    }
    if label.len() > MAX_LABEL {
        return Err("label longer than 63 bytes in hostname");
    }
    if !label
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err("hostname has a character outside a-z, 0-9 and -");
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err("label starts or ends with - in hostname");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn table() {
        let long_label = "a".repeat(64);
        let long_name = format!("{}.com", ["abcdefghi"; 26].join("."));
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("x.example", Ok("x.example")),
            ("Mixed.Case.Example", Ok("mixed.case.example")),
            ("a-b.c0.example", Ok("a-b.c0.example")),
            ("xn--bcher-kva.example", Ok("xn--bcher-kva.example")),
            ("", Err("empty hostname")),
            ("localhost", Err("hostname has a single label")),
            ("x.example.", Err("empty label in hostname")),
            (".x.example", Err("empty label in hostname")),
            ("a..b", Err("empty label in hostname")),
            ("-a.example", Err("label starts or ends with - in hostname")),
            ("a-.example", Err("label starts or ends with - in hostname")),
            (
                "a_b.example",
                Err("hostname has a character outside a-z, 0-9 and -"),
            ),
            (
                "*.example",
                Err("hostname has a character outside a-z, 0-9 and -"),
            ),
            (
                "é.example",
                Err("hostname has a character outside a-z, 0-9 and -"),
            ),
            (
                "127.0.0.1",
                Err("hostname is an IP address or ends in a numeric label"),
            ),
            (&long_label, Err("label longer than 63 bytes in hostname")),
            (&long_name, Err("hostname longer than 253 bytes")),
        ];
        for (input, want) in cases {
            assert_eq!(
                normalize(input).as_deref().map_err(|e| *e),
                *want,
                "{input}"
            );
        }
    }
}
