//! Billing labels stamped into every Gemini request (tenant, route, route version, and the
//! prompt version when there is one), so Google's billing reports split the spend the way
//! Tollgate's metrics do.

/// Longest label key or value Google accepts.
const MAX_LABEL: usize = 63;

/// `text` as a label value: lowercase ASCII letters, digits, `_` and `-`, every other
/// character replaced by `_`, at most 63 characters.
pub fn label_value(text: &str) -> String {
    text.chars()
        .take(MAX_LABEL)
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '_' | '-') => c,
            _ => '_',
        })
        .collect()
}

/// The labels of one request: `tollgate_tenant`, `tollgate_route`, `tollgate_version`, and
/// `tollgate_prompt` and `tollgate_prompt_version` for a request that rendered a prompt
/// (`prompt` is its id and version).
pub fn billing_labels(
    tenant: &str,
    route: &str,
    version: &str,
    prompt: Option<(&str, &str)>,
) -> Vec<(&'static str, String)> {
    let mut labels = Vec::with_capacity(5);
    labels.extend([
        ("tollgate_tenant", label_value(tenant)),
        ("tollgate_route", label_value(route)),
        ("tollgate_version", label_value(version)),
    ]);
    if let Some((id, prompt_version)) = prompt {
        labels.push(("tollgate_prompt", label_value(id)));
        labels.push(("tollgate_prompt_version", label_value(prompt_version)));
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Google's rule for values: lowercase letters, digits, `_` and `-`, up to 63.
    fn is_valid_value(value: &str) -> bool {
        value.len() <= MAX_LABEL
            && value
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    }

    #[test]
    fn values_follow_googles_rules() {
        assert_eq!(label_value("Acme Corp"), "acme_corp");
        assert_eq!(label_value("canary-2.5"), "canary-2_5");
        assert_eq!(label_value("Zürich"), "z_rich");
        let long = "x".repeat(100);
        assert_eq!(label_value(&long).len(), MAX_LABEL);
        for text in ["", "UPPER", "a/b@c", "ünïcödé", &long, "tab\tand\nnewline"] {
            assert!(is_valid_value(&label_value(text)), "{text:?}");
        }
    }

    #[test]
    fn keys_start_with_a_letter_and_are_valid() {
        let labels = billing_labels("t", "r", "v", Some(("support-answer", "v2.1")));
        assert_eq!(labels[3], ("tollgate_prompt", "support-answer".to_owned()));
        assert_eq!(labels[4], ("tollgate_prompt_version", "v2_1".to_owned()));
        assert_eq!(billing_labels("t", "r", "v", None).len(), 3);
        for (key, _) in labels {
            assert!(key.starts_with(|c: char| c.is_ascii_lowercase()));
            assert!(is_valid_value(key));
        }
    }
}
