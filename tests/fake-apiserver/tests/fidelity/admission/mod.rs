//! Mutating admission as kube-apiserver does it: a real HTTPS webhook (rustls, a
//! certificate from a test CA in `caBundle`) registered with a
//! MutatingWebhookConfiguration, pods created through the `kube` client, and checks of
//! the AdmissionReview sent, selectors, patch application, failurePolicy, denials,
//! Service references and reinvocation.
//!
//! `webhook` is the webhook server the tests register; `fixtures` the objects and
//! the client they create pods with. Each other module is one theme.

mod failure_policy;
mod fixtures;
mod injection;
mod service_reference;
mod webhook;
