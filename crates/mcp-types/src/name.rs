//! Checks for the names MCP puts into DNS (services, components, routes,
//! nodes) and for public hostnames, so a bad name fails at validation rather
//! than at certificate issuance or DNS registration.

/// The longest DNS label (RFC 1035).
pub const MAX_LABEL_LEN: usize = 63;
/// The longest hostname in text form (RFC 1035, without the trailing dot).
pub const MAX_HOSTNAME_LEN: usize = 253;

/// Checks that `s` is a lowercase DNS label: 1-63 characters of `a-z`, `0-9`
/// and `-`, neither starting nor ending with `-`.
pub fn check_dns_label(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("is empty; a DNS label needs 1-63 characters of a-z, 0-9 and '-'".to_string());
    }
    if s.len() > MAX_LABEL_LEN {
        return Err(format!(
            "{s:?} is {} characters long; a DNS label has at most {MAX_LABEL_LEN}",
            s.len()
        ));
    }
    if let Some(c) = s.chars().find(|c| c.is_ascii_uppercase()) {
        return Err(format!(
            "{s:?} contains uppercase {c:?}; DNS labels here are lowercase only"
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!(
            "{s:?} contains {c:?}; a DNS label uses only a-z, 0-9 and '-'"
        ));
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err(format!(
            "{s:?} starts or ends with '-', which DNS does not allow"
        ));
    }
    Ok(())
}

/// Checks that `s` is a fully qualified hostname: at least two labels joined
/// by `.`, each a DNS label, at most 253 characters, no trailing dot.
pub fn check_hostname(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("is empty; a hostname looks like \"app.example.net\"".to_string());
    }
    if s.len() > MAX_HOSTNAME_LEN {
        return Err(format!(
            "hostname {s:?} is {} characters long; the limit is {MAX_HOSTNAME_LEN}",
            s.len()
        ));
    }
    if s.ends_with('.') {
        return Err(format!(
            "hostname {s:?} ends with '.'; write it without the trailing dot"
        ));
    }
    let labels: Vec<&str> = s.split('.').collect();
    if labels.len() < 2 {
        return Err(format!(
            "hostname {s:?} has one label; a public hostname needs a domain, e.g. \"{s}.example.net\""
        ));
    }
    for label in labels {
        check_dns_label(label).map_err(|why| format!("hostname {s:?}: label {why}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn dns_labels() {
        for ok in [
            "a",
            "api",
            "metacrypt",
            "a-b",
            "x1",
            "1x",
            "0",
            &"a".repeat(63),
        ] {
            assert_eq!(check_dns_label(ok), Ok(()), "{ok}");
        }
        let bad: &[(&str, &str)] = &[
            ("", "is empty"),
            (&"a".repeat(64), "64 characters"),
            ("Api", "uppercase 'A'"),
            ("a_b", "contains '_'"),
            ("a.b", "contains '.'"),
            ("a b", "contains ' '"),
            ("é", "contains 'é'"),
            ("-a", "starts or ends with '-'"),
            ("a-", "starts or ends with '-'"),
        ];
        for (s, want) in bad {
            let err = check_dns_label(s).unwrap_err();
            assert!(err.contains(want), "{s:?}: {err:?} should contain {want:?}");
        }
    }

    #[test]
    fn hostnames() {
        for ok in ["a.b", "metacrypt.metacircular.net", "x-1.y-2.example"] {
            assert_eq!(check_hostname(ok), Ok(()), "{ok}");
        }
        let long = format!("{}.net", vec!["a".repeat(63); 4].join("."));
        let bad: &[(&str, &str)] = &[
            ("", "is empty"),
            ("localhost", "one label"),
            ("a.b.", "trailing dot"),
            ("a..b", "label is empty"),
            ("App.example.net", "uppercase"),
            ("a_b.example.net", "contains '_'"),
            ("-a.example.net", "starts or ends with '-'"),
            (&long, "the limit is 253"),
        ];
        for (s, want) in bad {
            let err = check_hostname(s).unwrap_err();
            assert!(err.contains(want), "{s:?}: {err:?} should contain {want:?}");
        }
    }
}
