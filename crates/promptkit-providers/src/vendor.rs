//! Plumbing the HTTP vendor providers share, as macros over their own types (the public
//! types stay per vendor): the common configuration builders, the [`Provider`] impl, and the
//! public stream decoders for recorded bodies.
//!
//! A vendor config has the fields `id`, `model`, `api_key`, `headers`, `http`, `pricing` and
//! `capabilities`; a vendor provider has `inner.config` and the methods `system`,
//! `run_predict` and `open_stream`.
//!
//! [`Provider`]: promptkit_core::Provider

/// The builder methods every vendor config has, with the same meaning.
macro_rules! config_builders {
    ($config:ty) => {
        impl $config {
            /// Sets the instance id.
            #[must_use]
            pub fn with_id(mut self, id: impl Into<String>) -> Self {
                self.id = id.into();
                self
            }

            /// Sets the API key (`None` sends no key, for gateways that authenticate
            /// otherwise, for example with a custom header).
            #[must_use]
            pub fn with_api_key(mut self, api_key: Option<String>) -> Self {
                self.api_key = api_key.filter(|k| !k.is_empty());
                self
            }

            /// Sets the transport settings (timeouts, retries, concurrency).
            #[must_use]
            pub fn with_http(mut self, http: $crate::http::HttpConfig) -> Self {
                self.http = http;
                self
            }

            /// Entries of `overrides` replace the prices of the same models; other models
            /// keep the built-in prices.
            #[must_use]
            pub fn with_pricing_overrides(
                mut self,
                overrides: &promptkit_core::PricingTable,
            ) -> Self {
                self.pricing = self.pricing.merged(overrides);
                self
            }

            /// Replaces the whole price table (an empty table: cost is always unknown).
            #[must_use]
            pub fn with_pricing(mut self, pricing: promptkit_core::PricingTable) -> Self {
                self.pricing = pricing;
                self
            }

            /// Sets what the model can do.
            #[must_use]
            pub fn with_capabilities(mut self, capabilities: promptkit_core::Capabilities) -> Self {
                self.capabilities = capabilities;
                self
            }

            /// The transport settings.
            pub fn http(&self) -> &$crate::http::HttpConfig {
                &self.http
            }
        }
    };
}

/// `impl Provider` for a vendor provider: the identity from its config, each call in a
/// `chat` span for the model it asks for (the request's override, else the configured one);
/// plus its `new` constructor, its `config` accessor and a `Debug` that shows the
/// (redacted) config.
macro_rules! http_provider {
    ($provider:ident($config:ty)) => {
        impl $provider {
            /// A provider with its own connection pool.
            ///
            /// # Errors
            ///
            /// [`ProviderError::Config`](promptkit_core::ProviderError::Config) when the HTTP
            /// client cannot be built, or the URL or a header is invalid.
            pub fn new(config: $config) -> Result<Self, promptkit_core::ProviderError> {
                let client = config.http.build_client()?;
                Self::with_client(config, client)
            }

            /// The configuration.
            pub fn config(&self) -> &$config {
                &self.inner.config
            }
        }

        impl std::fmt::Debug for $provider {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_tuple(stringify!($provider))
                    .field(&self.inner.config)
                    .finish()
            }
        }

        impl promptkit_core::Provider for $provider {
            fn id(&self) -> &str {
                &self.inner.config.id
            }

            fn model(&self) -> &str {
                &self.inner.config.model
            }

            fn capabilities(&self) -> promptkit_core::Capabilities {
                self.inner.config.capabilities
            }

            fn pricing(&self) -> Option<&promptkit_core::PricingTable> {
                Some(&self.inner.config.pricing)
            }

            fn predict<'a>(
                &'a self,
                request: &'a promptkit_core::ProviderRequest,
            ) -> promptkit_core::BoxFuture<
                'a,
                Result<promptkit_core::ProviderResponse, promptkit_core::ProviderError>,
            > {
                use tracing::Instrument as _;
                let model = request.model.as_deref().unwrap_or(&self.inner.config.model);
                let span =
                    $crate::http::chat_span(self.system(), &self.inner.config.id, model, false);
                Box::pin(self.run_predict(request, model).instrument(span))
            }

            fn stream<'a>(
                &'a self,
                request: &'a promptkit_core::ProviderRequest,
            ) -> promptkit_core::BoxFuture<
                'a,
                Result<promptkit_core::EventStream, promptkit_core::ProviderError>,
            > {
                use tracing::Instrument as _;
                let model = request.model.as_deref().unwrap_or(&self.inner.config.model);
                let span =
                    $crate::http::chat_span(self.system(), &self.inner.config.id, model, true);
                Box::pin(
                    self.open_stream(request, model, span.clone())
                        .instrument(span),
                )
            }
        }
    };
}

/// A public decoder of a vendor's SSE body held in memory or fed in chunks, outside a
/// provider call (for replaying recorded streams, proxies and benchmarks), over the
/// vendor's crate-internal event handler.
macro_rules! body_decoder {
    (
        $(#[$doc:meta])*
        $name:ident($handler:ty),
        feed_errors: $feed:literal,
        finish_errors: $finish:literal $(,)?
    ) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name {
            inner: $crate::http::BodyDecoder<$handler>,
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl $name {
            /// A decoder at the start of a stream, with the default stream limits
            /// ([`IoLimits::default`](crate::http::IoLimits::default)).
            pub fn new() -> Self {
                Self {
                    inner: $crate::http::BodyDecoder::new(<$handler>::new(tracing::Span::none())),
                }
            }

            /// A decoder with the stream limits of `http` (line and event sizes, malformed
            /// frames in a row), as a live stream of a provider with those settings has.
            pub fn with_http(http: &$crate::http::HttpConfig) -> Self {
                Self {
                    inner: $crate::http::BodyDecoder::with_config(
                        <$handler>::new(tracing::Span::none()),
                        http,
                    ),
                }
            }

            /// Feeds body bytes; returns the events they complete. The decoder is an entry
            /// point for fuzzing: any bytes give events or a typed error, never a panic.
            ///
            /// # Errors
            ///
            /// [`ProviderError::ResponseTooLarge`](promptkit_core::ProviderError::ResponseTooLarge)
            /// when a line or event passes its limit,
            /// [`ProviderError::Decode`](promptkit_core::ProviderError::Decode) after too many
            /// malformed frames in a row, and:
            #[doc = $feed]
            pub fn feed(
                &mut self,
                bytes: &[u8],
            ) -> Result<Vec<promptkit_core::StreamEvent>, promptkit_core::ProviderError> {
                self.inner.feed(bytes)
            }

            /// Ends the body; returns the closing events.
            ///
            /// # Errors
            ///
            /// [`ProviderError::ResponseTooLarge`](promptkit_core::ProviderError::ResponseTooLarge)
            /// when the last line passes the event limit, and:
            #[doc = $finish]
            pub fn finish(
                &mut self,
            ) -> Result<Vec<promptkit_core::StreamEvent>, promptkit_core::ProviderError> {
                self.inner.finish()
            }
        }
    };
}

pub(crate) use {body_decoder, config_builders, http_provider};
