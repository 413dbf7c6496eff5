//! The operator binary (reconciler comes with the operator issue).

fn main() {
    println!("rc-operator: not implemented yet");
}
