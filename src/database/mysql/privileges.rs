//! What the monitoring user may do, from `SHOW GRANTS`.

/// `'app'@'%'` → `app`.
pub(super) fn grantee_user(grantee: &str) -> Option<String> {
    let user = grantee.split("@").next()?;
    Some(user.trim_matches(['\'', '`', '"']).to_owned())
}

/// The monitoring user's global privileges, from `SHOW GRANTS`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Privileges {
    pub all: bool,
    pub process: bool,
    pub super_: bool,
    pub connection_admin: bool,
    pub system_user: bool,
}

impl Privileges {
    /// Reads the `GRANT … ON *.* TO …` lines; grants through roles are not followed (grant the
    /// monitoring user its privileges directly).
    pub fn from_grants(lines: &[String]) -> Self {
        let mut p = Self::default();
        for line in lines {
            let Some(rest) = line.strip_prefix("GRANT ") else {
                continue;
            };
            let Some((list, _)) = rest.split_once(" ON *.* TO ") else {
                continue;
            };
            for privilege in list.split(',').map(|s| s.trim().to_ascii_uppercase()) {
                match privilege.as_str() {
                    "ALL PRIVILEGES" | "ALL" => p.all = true,
                    "PROCESS" => p.process = true,
                    "SUPER" => p.super_ = true,
                    "CONNECTION ADMIN" | "CONNECTION_ADMIN" => p.connection_admin = true,
                    "SYSTEM_USER" => p.system_user = true,
                    _ => {}
                }
            }
        }
        p
    }

    /// May end other users' threads (`KILL` needs CONNECTION ADMIN or SUPER for them).
    pub fn may_kill_others(&self) -> bool {
        self.all || self.super_ || self.connection_admin
    }

    /// May end any user's threads. On MySQL 8 only with SYSTEM_USER (which ALL includes); on
    /// MariaDB a user with SUPER may.
    pub fn kills_anyone(&self, flavour: crate::database::Flavour) -> bool {
        match flavour {
            crate::database::Flavour::MariaDb => self.all || self.super_,
            _ => self.all || (self.system_user && self.may_kill_others()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn grants_say_what_the_monitor_may_do() {
        let p = Privileges::from_grants(&[
            "GRANT PROCESS, CONNECTION ADMIN ON *.* TO `monitor`@`%` IDENTIFIED BY PASSWORD 'x'"
                .into(),
            "GRANT SELECT ON `performance_schema`.* TO `monitor`@`%`".into(),
        ]);
        assert!(p.process && p.connection_admin && !p.super_);
        assert!(p.may_kill_others());
        assert!(!p.kills_anyone(crate::database::Flavour::MySql));
        let mysql8 = Privileges::from_grants(&[
            "GRANT PROCESS ON *.* TO `m`@`%`".into(),
            "GRANT CONNECTION_ADMIN,SYSTEM_USER ON *.* TO `m`@`%`".into(),
        ]);
        assert!(mysql8.kills_anyone(crate::database::Flavour::MySql));
        let none = Privileges::from_grants(&["GRANT USAGE ON *.* TO `w`@`%`".into()]);
        assert!(!none.process && !none.may_kill_others());
        assert!(
            Privileges::from_grants(&["GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost`".into()])
                .all
        );
    }

    #[test]
    fn a_grantee_is_its_user() {
        assert_eq!(grantee_user("'app'@'%'").as_deref(), Some("app"));
    }
}
