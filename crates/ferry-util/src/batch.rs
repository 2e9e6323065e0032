//! Work deferred to the end of a burst on one thread. A producer of many
//! completions at once (a high watermark or an fsync releasing every
//! publish it covers) runs them inside [`scope`]; a consumer of
//! completions that would rather answer once per burst than once per
//! completion (an AMQP channel's publisher confirms: one `multiple` ack
//! instead of one frame each) hands its answer to [`defer`], keyed, so the
//! burst's completions share one call made when the scope ends. Outside a
//! scope, [`defer`] runs at once: nothing ever waits on a scope that no
//! one opened.

use std::cell::RefCell;

type Deferred = Vec<(usize, Box<dyn FnOnce()>)>;

thread_local! {
    /// The deferred calls of the scope open on this thread (`None`: no scope).
    static SCOPE: RefCell<Option<Deferred>> = const { RefCell::new(None) };
}

/// Closes the outermost scope: runs what was deferred, also on unwinding,
/// so a deferred answer is never lost with a panicking completion.
struct Close;

impl Drop for Close {
    fn drop(&mut self) {
        loop {
            // A deferred call may defer more (with the scope still open, so
            // they join this burst): run until none are left.
            let batch = SCOPE.with(|s| s.borrow_mut().as_mut().map(std::mem::take).unwrap_or_default());
            if batch.is_empty() {
                break;
            }
            for (_, f) in batch {
                f();
            }
        }
        SCOPE.with(|s| *s.borrow_mut() = None);
    }
}

/// Runs `f`; calls it [`defer`]s run once, after it returns. A scope
/// opened inside another joins it (the outer one runs them).
pub fn scope<R>(f: impl FnOnce() -> R) -> R {
    let outer = SCOPE.with(|s| {
        let mut s = s.borrow_mut();
        if s.is_some() {
            return true;
        }
        *s = Some(Vec::new());
        false
    });
    if outer {
        return f();
    }
    let _close = Close;
    f()
}

/// Runs `f` at the end of this thread's open scope, once per `key` (a
/// second call with a key already deferred is dropped: the first covers
/// it), or now if no scope is open.
pub fn defer(key: usize, f: impl FnOnce() + 'static) {
    let f = SCOPE.with(|s| match s.borrow_mut().as_mut() {
        Some(list) => {
            if !list.iter().any(|(k, _)| *k == key) {
                list.push((key, Box::new(f)));
            }
            None
        }
        None => Some(f),
    });
    if let Some(f) = f {
        f();
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use super::*;

    #[test]
    fn deferred_calls_run_once_per_key_when_the_scope_ends() {
        let log = Rc::new(RefCell::new(Vec::new()));
        let push = |what: &'static str| {
            let log = log.clone();
            move || log.borrow_mut().push(what)
        };
        defer(1, push("unscoped"));
        assert_eq!(*log.borrow(), ["unscoped"], "no scope: at once");
        scope(|| {
            defer(1, push("a"));
            defer(1, push("a again"));
            defer(2, push("b"));
            scope(|| defer(3, push("inner")));
            assert_eq!(log.borrow().len(), 1, "nothing before the outer scope ends");
        });
        assert_eq!(*log.borrow(), ["unscoped", "a", "b", "inner"]);
        // A deferred call deferring another: it runs in the same scope's end.
        let log2 = log.clone();
        scope(|| {
            defer(4, move || {
                let log3 = log2.clone();
                defer(5, move || log3.borrow_mut().push("chained"));
            });
        });
        assert_eq!(log.borrow().last(), Some(&"chained"));
        defer(6, push("after"));
        assert_eq!(log.borrow().last(), Some(&"after"), "the scope is closed again");
    }

    #[test]
    fn a_panic_inside_a_scope_still_runs_what_was_deferred() {
        let ran = Rc::new(RefCell::new(false));
        let r = ran.clone();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            scope(|| {
                defer(1, move || *r.borrow_mut() = true);
                panic!("a completion failed");
            })
        }));
        assert!(result.is_err());
        assert!(*ran.borrow());
        let after = Rc::new(RefCell::new(false));
        let a = after.clone();
        defer(2, move || *a.borrow_mut() = true);
        assert!(*after.borrow(), "no scope left open");
    }
}
