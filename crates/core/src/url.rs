//! Query parameters hepdb reads from a dependency's URL and takes out before the driver sees
//! it (drivers refuse parameters they do not know): `sslrootcert` on PostgreSQL and MariaDB
//! URLs, `cacertfile` on AMQP URLs.

/// `url` without its query parameter `name`, and that parameter's value.
pub fn take_param(url: &str, name: &str) -> (String, Option<String>) {
    // The query starts after the credentials: a password may hold a `?`.
    let after_credentials = url.rfind('@').map_or(0, |at| at + 1);
    let Some(q) = url[after_credentials..].find('?') else {
        return (url.to_owned(), None);
    };
    let (base, query) = (
        &url[..after_credentials + q],
        &url[after_credentials + q + 1..],
    );
    let mut value = None;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| match pair.split_once('=') {
            Some((k, v)) if k == name => {
                value = Some(v.to_owned());
                false
            }
            _ => true,
        })
        .collect();
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    (url, value)
}

#[cfg(test)]
mod tests {
    use super::take_param;

    #[test]
    fn the_parameter_is_taken_out() {
        assert_eq!(
            take_param(
                "postgres://h/db?sslmode=require&sslrootcert=/ca.pem&x=1",
                "sslrootcert"
            ),
            (
                "postgres://h/db?sslmode=require&x=1".to_owned(),
                Some("/ca.pem".to_owned())
            )
        );
        assert_eq!(
            take_param("amqps://h/%2f?cacertfile=/ca.pem", "cacertfile"),
            ("amqps://h/%2f".to_owned(), Some("/ca.pem".to_owned()))
        );
        assert_eq!(
            take_param("amqp://h", "cacertfile"),
            ("amqp://h".to_owned(), None)
        );
        // A `?` in the password is not the query.
        assert_eq!(
            take_param("postgres://u:p?w@h/db?sslrootcert=/ca.pem", "sslrootcert"),
            (
                "postgres://u:p?w@h/db".to_owned(),
                Some("/ca.pem".to_owned())
            )
        );
    }
}
