//! One shared copy of each subprotocol name: a server agrees one of a few names on every
//! connection, and a connection that holds its own copy pays an allocation for it (32 bytes
//! of heap for `tether.json`), which many idle connections multiply.

use std::sync::{Arc, Mutex, PoisonError};

/// How many names are kept. Past that (an application that agrees names its clients made
/// up), a name is not shared: the table stays small and its lookup short.
const MAX_NAMES: usize = 32;

static NAMES: Mutex<Vec<Arc<str>>> = Mutex::new(Vec::new());

/// `name`, shared with every earlier connection that agreed the same.
pub(crate) fn name(name: String) -> Arc<str> {
    let mut names = NAMES.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(known) = names.iter().find(|known| ***known == *name) {
        return known.clone();
    }
    let name: Arc<str> = name.into();
    if names.len() < MAX_NAMES {
        names.push(name.clone());
    }
    name
}

#[cfg(test)]
mod tests {
    use super::{name, MAX_NAMES};
    use std::sync::Arc;

    #[test]
    fn the_same_name_is_one_allocation_and_the_table_stays_bounded() {
        let a = name("intern-test.json".to_owned());
        let b = name("intern-test.json".to_owned());
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(&*a, "intern-test.json");
        let other = name("intern-test.stomp".to_owned());
        assert!(!Arc::ptr_eq(&a, &other));
        assert_eq!(&*other, "intern-test.stomp");
        // Names past the bound are still given, only not shared.
        for i in 0..2 * MAX_NAMES {
            assert_eq!(&*name(format!("made-up-{i}")), format!("made-up-{i}"));
        }
        assert!(super::NAMES.lock().unwrap().len() <= MAX_NAMES);
        assert!(Arc::ptr_eq(&a, &name("intern-test.json".to_owned())));
    }
}
