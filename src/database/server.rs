//! Which server a database URL names: what policies may share one monitoring connection, and
//! one look, by.
//!
//! `pg_stat_activity` (and MySQL's processlist) shows every database of its server, whichever
//! database the monitoring connection logged into: two URLs that differ only in the database
//! they name see the same sessions. Everything else stays in the key (scheme, user, password,
//! host, port, and every parameter but the database's: TLS mode, CA, timeouts), so that
//! different credentials or TLS settings never share a connection. Two spellings of one server
//! (`postgres://` and `postgresql://`, parameters in another order) are two keys: they only cost
//! a second connection.

/// The server `url` names, as a key: `url` without its database.
pub fn server_key(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
    // The database is the path after the authority; a password may hold a '/', the host not.
    let host_start = before_query.rfind('@').map_or(0, |at| at + 1);
    let authority_end = before_query[host_start..]
        .find('/')
        .map_or(before_query.len(), |slash| host_start + slash);
    let authority = &before_query[..authority_end];
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter(|pair| {
            let key = pair.split_once('=').map_or(*pair, |(key, _)| key);
            // The database, and the name poolwarden always gives its own session.
            !matches!(key, "dbname" | "application_name")
        })
        .collect();
    if kept.is_empty() {
        format!("{scheme}://{authority}")
    } else {
        format!("{scheme}://{authority}?{}", kept.join("&"))
    }
}

#[cfg(test)]
mod tests {
    use super::server_key;

    #[test]
    fn urls_that_differ_only_in_their_database_name_one_server() {
        let orders = "postgres://monitor:s3cret@db-1:5432/orders?sslmode=verify-full";
        let billing = "postgres://monitor:s3cret@db-1:5432/billing?sslmode=verify-full";
        assert_eq!(server_key(orders), server_key(billing));
        assert_eq!(
            server_key(orders),
            "postgres://monitor:s3cret@db-1:5432?sslmode=verify-full"
        );
        assert_eq!(
            server_key("postgres://monitor@db-1:5432?dbname=orders&sslmode=disable"),
            server_key("postgres://monitor@db-1:5432/billing?sslmode=disable&application_name=x"),
        );
        assert_eq!(
            server_key("mysql://monitor:pw@db-2:3306/orders"),
            server_key("mysql://monitor:pw@db-2:3306/billing"),
        );
    }

    #[test]
    fn credentials_address_and_tls_settings_each_make_another_server() {
        let base = "postgres://monitor:pw@db-1:5432/orders?sslmode=verify-full";
        for other in [
            "postgres://monitor:other@db-1:5432/orders?sslmode=verify-full",
            "postgres://reporter:pw@db-1:5432/orders?sslmode=verify-full",
            "postgres://monitor:pw@db-2:5432/orders?sslmode=verify-full",
            "postgres://monitor:pw@db-1:5433/orders?sslmode=verify-full",
            "postgres://monitor:pw@db-1:5432/orders?sslmode=require",
            "postgres://monitor:pw@db-1:5432/orders?sslmode=verify-full&sslrootcert=/ca.pem",
            "mysql://monitor:pw@db-1:5432/orders?sslmode=verify-full",
        ] {
            assert_ne!(server_key(base), server_key(other), "{other}");
        }
    }

    #[test]
    fn a_slash_in_the_password_is_not_the_database() {
        assert_eq!(
            server_key("postgres://monitor:a/b@db-1:5432/orders"),
            "postgres://monitor:a/b@db-1:5432"
        );
        assert_ne!(
            server_key("postgres://monitor:a/b@db-1:5432/orders"),
            server_key("postgres://monitor:a/c@db-1:5432/orders")
        );
    }
}
