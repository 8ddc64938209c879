//! [`Name`]: an immutable string shared by reference count, for the names deciding copies per
//! session (a workload's namespace, kind and name, a pod's name).
//!
//! Every governed session's attribution, and every termination, carries its workload and pod;
//! with `String`s each copy was an allocation and a copy of the bytes, which at 100,000 sessions
//! was most of what deciding cost. Cloning a `Name` only bumps a count. Otherwise it behaves as a
//! `str`: compared, ordered and hashed by its text, shown and serialised as it.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use serde::{Serialize, Serializer};

#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(Arc<str>);

impl Name {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Name {
    fn from(s: &str) -> Self {
        Self(s.into())
    }
}

impl From<String> for Name {
    fn from(s: String) -> Self {
        Self(s.into())
    }
}

impl From<&String> for Name {
    fn from(s: &String) -> Self {
        Self(s.as_str().into())
    }
}

impl From<Name> for String {
    fn from(n: Name) -> Self {
        n.0.as_ref().to_owned()
    }
}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl PartialEq<String> for Name {
    fn eq(&self, other: &String) -> bool {
        &*self.0 == other.as_str()
    }
}

impl PartialEq<Name> for str {
    fn eq(&self, other: &Name) -> bool {
        self == &*other.0
    }
}

impl PartialEq<Name> for &str {
    fn eq(&self, other: &Name) -> bool {
        *self == &*other.0
    }
}

impl PartialEq<Name> for String {
    fn eq(&self, other: &Name) -> bool {
        self.as_str() == &*other.0
    }
}

/// As a `str` shows: quoted and escaped, so a `Name` reads as the `String` it replaced.
impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

impl Serialize for Name {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_reads_compares_and_serialises_as_its_text() {
        let name = Name::from("orders-7d9f6c-0");
        let copy = name.clone();
        assert!(Arc::ptr_eq(&name.0, &copy.0), "a clone shares the text");
        assert_eq!(name, "orders-7d9f6c-0");
        assert_eq!(format!("{name:?}"), format!("{:?}", "orders-7d9f6c-0"));
        assert_eq!(name.to_string(), "orders-7d9f6c-0");
        assert_eq!(serde_json::to_string(&name).unwrap(), "\"orders-7d9f6c-0\"");
        let mut names = vec![Name::from("b"), Name::from("a")];
        names.sort();
        assert_eq!(names, ["a", "b"], "ordered by its text");
    }
}

/// One [`Name`] per distinct text: a look's sessions share a handful of users, databases and
/// application names, so each is copied once per decision, then shared.
#[derive(Default)]
pub struct SharedNames<'s>(super::FastMap<&'s str, Name>);

impl<'s> SharedNames<'s> {
    pub fn of(&mut self, text: &'s str) -> Name {
        self.0.entry(text).or_insert_with(|| text.into()).clone()
    }
}
