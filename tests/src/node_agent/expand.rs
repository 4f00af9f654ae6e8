//! `$(VAR)` references in a container's env values, command and args, as the
//! kubelet expands them.
//!
//! A reference to a defined variable is replaced by its value; one to an
//! undefined variable stays as written; `$$` is a literal `$` (so `$$(VAR)`
//! is the text `$(VAR)`). Anything else is copied unchanged.

/// `input` with every `$(NAME)` that `lookup` knows replaced.
pub fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('(') {
            match body.find(')') {
                Some(end) => {
                    let name = &body[..end];
                    match lookup(name) {
                        Some(value) => out.push_str(&value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &body[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = body;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(name: &str) -> Option<String> {
        match name {
            "POD_IP" => Some("10.244.1.2".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn defined_references_are_replaced_and_undefined_ones_kept() {
        assert_eq!(expand("$(POD_IP):50051", vars), "10.244.1.2:50051");
        assert_eq!(expand("a$(EMPTY)b", vars), "ab");
        assert_eq!(expand("$(NOPE)-$(POD_IP)", vars), "$(NOPE)-10.244.1.2");
    }

    #[test]
    fn dollars_escape_and_stray_ones_stay() {
        assert_eq!(expand("$$(POD_IP)", vars), "$(POD_IP)");
        assert_eq!(expand("cost $5 $$", vars), "cost $5 $");
        assert_eq!(expand("$(POD_IP", vars), "$(POD_IP");
        assert_eq!(expand("end$", vars), "end$");
    }
}
