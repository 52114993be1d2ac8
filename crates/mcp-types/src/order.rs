//! The order in which a set of services deployed together must start, so each
//! one comes after the services it depends on.

use std::collections::BTreeMap;

use crate::service::ServiceDef;

/// Orders a set deployed together so each service comes after what it
/// `depends_on`, returning indices into `set`. Services with no order between
/// them keep their order in `set`.
///
/// `deployed(name)` says a service outside the set already exists in the
/// fleet. A dependency that is neither in the set nor deployed is an error
/// naming it, as is a cycle (`dependency cycle: a -> b -> a`) and a name that
/// appears twice in the set.
pub fn order_by_dependencies(
    set: &[ServiceDef],
    deployed: &dyn Fn(&str) -> bool,
) -> Result<Vec<usize>, String> {
    let mut index: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, def) in set.iter().enumerate() {
        if index.insert(def.name.as_str(), i).is_some() {
            return Err(format!(
                "service {:?} appears twice in this deploy",
                def.name
            ));
        }
    }
    for def in set {
        for dep in &def.depends_on {
            if !index.contains_key(dep.as_str()) && !deployed(dep) {
                return Err(format!(
                    "{} depends_on {dep:?}, which is neither in this deploy nor deployed",
                    def.name
                ));
            }
        }
    }

    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Visiting,
        Done,
    }
    let mut marks = vec![Mark::New; set.len()];
    let mut order = Vec::with_capacity(set.len());
    // Depth-first, iteratively: a path of (service, next dependency to visit).
    for start in 0..set.len() {
        if marks[start] != Mark::New {
            continue;
        }
        let mut path: Vec<(usize, usize)> = vec![(start, 0)];
        marks[start] = Mark::Visiting;
        while let Some(&mut (node, ref mut next)) = path.last_mut() {
            let deps = &set[node].depends_on;
            if let Some(dep) = deps.get(*next) {
                *next += 1;
                let Some(&d) = index.get(dep.as_str()) else {
                    continue; // already deployed outside the set
                };
                match marks[d] {
                    Mark::Done => {}
                    Mark::New => {
                        marks[d] = Mark::Visiting;
                        path.push((d, 0));
                    }
                    Mark::Visiting => {
                        let from = path.iter().position(|(n, _)| *n == d).unwrap_or(0);
                        let mut names: Vec<&str> = path[from..]
                            .iter()
                            .map(|(n, _)| set[*n].name.as_str())
                            .collect();
                        names.push(set[d].name.as_str());
                        return Err(format!("dependency cycle: {}", names.join(" -> ")));
                    }
                }
            } else {
                marks[node] = Mark::Done;
                order.push(node);
                path.pop();
            }
        }
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::service::{Resources, Tier};

    fn def(name: &str, deps: &[&str]) -> ServiceDef {
        ServiceDef {
            name: name.into(),
            tier: Tier::Worker,
            node: None,
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            resources: Resources::default(),
            components: vec![],
        }
    }

    fn names(set: &[ServiceDef], order: &[usize]) -> Vec<String> {
        order.iter().map(|i| set[*i].name.clone()).collect()
    }

    #[test]
    fn dependencies_come_first() {
        let set = vec![
            def("metacrypt", &["mcias", "mcns"]),
            def("mcns", &["mcias"]),
            def("mcias", &[]),
            def("hello", &[]),
        ];
        let order = order_by_dependencies(&set, &|_| false).unwrap();
        assert_eq!(names(&set, &order), ["mcias", "mcns", "metacrypt", "hello"]);
    }

    #[test]
    fn independent_services_keep_their_order() {
        let set = vec![def("c", &[]), def("a", &[]), def("b", &[])];
        assert_eq!(order_by_dependencies(&set, &|_| false).unwrap(), [0, 1, 2]);
        assert_eq!(
            order_by_dependencies(&[], &|_| false).unwrap(),
            Vec::<usize>::new()
        );
    }

    #[test]
    fn deployed_dependencies_are_satisfied() {
        let set = vec![def("metacrypt", &["mcias"])];
        let order = order_by_dependencies(&set, &|name| name == "mcias").unwrap();
        assert_eq!(order, [0]);
    }

    #[test]
    fn unknown_dependency_is_named() {
        let set = vec![def("hello", &[]), def("metacrypt", &["mcias"])];
        let err = order_by_dependencies(&set, &|name| name == "other").unwrap_err();
        assert_eq!(
            err,
            "metacrypt depends_on \"mcias\", which is neither in this deploy nor deployed"
        );
    }

    #[test]
    fn cycle_is_named() {
        let set = vec![def("a", &["b"]), def("b", &["a"])];
        assert_eq!(
            order_by_dependencies(&set, &|_| true).unwrap_err(),
            "dependency cycle: a -> b -> a"
        );
        let set = vec![
            def("x", &["a"]),
            def("a", &["b"]),
            def("b", &["c"]),
            def("c", &["a"]),
        ];
        assert_eq!(
            order_by_dependencies(&set, &|_| false).unwrap_err(),
            "dependency cycle: a -> b -> c -> a"
        );
        let set = vec![def("a", &["a"])];
        assert_eq!(
            order_by_dependencies(&set, &|_| false).unwrap_err(),
            "dependency cycle: a -> a"
        );
    }

    #[test]
    fn duplicate_in_set_is_an_error() {
        let set = vec![def("a", &[]), def("a", &[])];
        assert!(order_by_dependencies(&set, &|_| false)
            .unwrap_err()
            .contains("\"a\" appears twice"));
    }
}
