//! Hiding the secrets of connection URLs.

/// `url` with its password replaced by `***`: the one in the user info
/// (`scheme://user:password@host`) and the values of `password` and `pass` query parameters
/// (which the Postgres and Redis clients also accept). Everything else, including the user
/// name, is kept, so the text still says where the store is. Used by the `Debug` form of the
/// store configurations; callers printing a store URL (say, in an error about it) can use it
/// too.
///
/// ```
/// use promptkit_state::redact_url;
///
/// assert_eq!(redact_url("postgres://app:s3cret@db:5432/pk"), "postgres://app:***@db:5432/pk");
/// assert_eq!(redact_url("redis://:s3cret@cache/0"), "redis://:***@cache/0");
/// assert_eq!(
///     redact_url("postgres:///pk?host=/run/pg&password=s3cret"),
///     "postgres:///pk?host=/run/pg&password=***"
/// );
/// ```
pub fn redact_url(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    let mut tail = url;
    if let Some((scheme, rest)) = url.split_once("://") {
        out.push_str(scheme);
        out.push_str("://");
        tail = rest;
        // The last `@` ends the user info, even when an unencoded password holds `/`, `?`
        // or `@` itself: better to hide too much than to show a secret.
        if let Some(at) = rest.rfind('@') {
            let userinfo = &rest[..at];
            match userinfo.split_once(':') {
                Some((user, _)) => {
                    out.push_str(user);
                    out.push_str(":***");
                }
                None => out.push_str(userinfo),
            }
            out.push('@');
            tail = &rest[at + 1..];
        }
    }
    let (before_fragment, fragment) = split_keep(tail, '#');
    let (path, query) = split_keep(before_fragment, '?');
    out.push_str(path);
    if let Some(query) = query {
        out.push('?');
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _))
                    if key.eq_ignore_ascii_case("password") || key.eq_ignore_ascii_case("pass") =>
                {
                    format!("{key}=***")
                }
                _ => pair.to_owned(),
            })
            .collect();
        out.push_str(&pairs.join("&"));
    }
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

/// `text` split at the first `sep`: before it, and after it when present.
fn split_keep(text: &str, sep: char) -> (&str, Option<&str>) {
    match text.split_once(sep) {
        Some((before, after)) => (before, Some(after)),
        None => (text, None),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_are_hidden_and_the_rest_kept() {
        let cases = [
            ("postgres://u:p@h:5432/db", "postgres://u:***@h:5432/db"),
            ("postgres://u:p@h", "postgres://u:***@h"),
            ("postgres://u@h/db", "postgres://u@h/db"),
            (
                "postgres://h/db?sslmode=require",
                "postgres://h/db?sslmode=require",
            ),
            ("postgres://u:p%40x@h/db", "postgres://u:***@h/db"),
            ("postgres://u:p@x@h/db", "postgres://u:***@h/db"),
            (
                "redis://:p@127.0.0.1:6379/0",
                "redis://:***@127.0.0.1:6379/0",
            ),
            (
                "rediss://default:p@cache:6380",
                "rediss://default:***@cache:6380",
            ),
            (
                "redis+unix:///run/redis.sock?db=1&pass=p",
                "redis+unix:///run/redis.sock?db=1&pass=***",
            ),
            (
                "postgres://h/db?PASSWORD=p&user=u",
                "postgres://h/db?PASSWORD=***&user=u",
            ),
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("postgres://u:pa/ss@h/db", "postgres://u:***@h/db"),
            ("postgres://u:pa?ss@h/db", "postgres://u:***@h/db"),
            ("not a url", "not a url"),
            ("", ""),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }
}
