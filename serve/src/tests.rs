use super::*;

fn busy(admitted: &Admitted) {
    admitted.slot.activity.in_flight.fetch_add(1, Relaxed);
}

#[test]
fn the_cap_displaces_the_longest_idle_connection() {
    let connections = Connections::new(3);
    let a = connections.admit().expect("room");
    let b = connections.admit().expect("room");
    let c = connections.admit().expect("room");
    busy(&a);
    std::thread::sleep(Duration::from_millis(2));
    c.slot.activity.last_active_ms.store(0, Relaxed);
    b.slot
        .activity
        .last_active_ms
        .store(b.slot.activity.now_ms(), Relaxed);
    let d = connections.admit().expect("an idle one makes room");
    assert_eq!(connections.open(), 3);
    let still_open: Vec<u64> = connections
        .open
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.id)
        .collect();
    assert!(
        !still_open.contains(&c.slot.id),
        "c was idle longest: {still_open:?}"
    );
    assert!(
        still_open.contains(&a.slot.id),
        "a is busy, never displaced"
    );
    assert!(still_open.contains(&b.slot.id) && still_open.contains(&d.slot.id));
    drop(c);
    assert_eq!(
        connections.open(),
        3,
        "dropping a displaced slot counts nothing out twice"
    );
}

#[test]
fn when_every_connection_is_busy_the_new_one_is_refused() {
    let connections = Connections::new(2);
    let a = connections.admit().expect("room");
    let b = connections.admit().expect("room");
    busy(&a);
    busy(&b);
    let refused = connections.admit().err().expect("all busy");
    assert_eq!(refused.max, 2);
    assert!(refused.to_string().contains("all 2 connections"));
    assert_eq!(connections.open(), 2);
    drop(a);
    assert_eq!(connections.open(), 1);
    let _c = connections.admit().expect("room again");
    assert_eq!(connections.open(), 2);
}

#[test]
fn a_busy_connection_is_not_idle_and_an_answer_resets_its_idle_time() {
    let connections = Connections::new(1);
    let a = connections.admit().expect("room");
    a.slot.activity.last_active_ms.store(0, Relaxed);
    std::thread::sleep(Duration::from_millis(5));
    assert!(a.slot.activity.idle_for().expect("idle") >= Duration::from_millis(5));
    let request = Busy {
        inner: Box::pin(std::future::ready(())),
        activity: {
            a.slot.activity.in_flight.fetch_add(1, Relaxed);
            a.slot.activity.clone()
        },
    };
    assert_eq!(a.slot.activity.idle_for(), None);
    drop(request);
    assert!(a.slot.activity.idle_for().expect("idle again") < Duration::from_millis(5));
}
