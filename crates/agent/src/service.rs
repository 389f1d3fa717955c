//! Service renderer: Service + EndpointSlice + Pod + Node → NAT44 mappings (SYSTEM.md section 6).
