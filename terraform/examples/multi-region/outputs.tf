output "topology" {
  description = "The shared topology as JSON, exactly what every node got: save it (terraform output -raw topology > topology.json) for `edgemesh` commands."
  value       = jsonencode(local.topology)
}

output "edge_urls" {
  description = "Edge URL of each region."
  value       = { eu = module.eu.edge_url, us = module.us.edge_url, ap = module.ap.edge_url }
}

output "edge_addresses" {
  description = "Public addresses of each region's edge load balancer."
  value       = local.edge_addresses
}

output "gateway_urls" {
  description = "NATS gateway URLs of each region (DNS names, no credentials)."
  value       = { eu = module.eu.gateway_urls, us = module.us.gateway_urls, ap = module.ap.gateway_urls }
}

output "dns_server_addresses" {
  description = "Public addresses of each region's geo-DNS server (the control plane)."
  value       = { eu = module.eu.dns_server_addresses, us = module.us.dns_server_addresses, ap = module.ap.dns_server_addresses }
}

output "control_plane_urls" {
  description = "Control-plane API URL of each region (reachable from operator_cidrs)."
  value       = { eu = module.eu.control_plane_url, us = module.us.control_plane_url, ap = module.ap.control_plane_url }
}

output "geo_zone" {
  description = "The delegated geo-DNS zone; clients resolve edge.ZONE."
  value       = module.dns.zone
}

output "name_servers" {
  description = "Name servers of the geo-DNS zone and their glue addresses."
  value       = module.dns.name_servers
}

output "nats_ca_certificate" {
  description = "The deployment's NATS CA certificate (PEM, public): save it (terraform output -raw nats_ca_certificate > ca.pem) to reach NATS and its monitoring from outside (curl --cacert ca.pem https://...)."
  value       = module.pki.ca_cert_pem
}

output "nats_certificate_names" {
  description = "Per NATS server: the DNS names and IP addresses its certificate covers."
  value       = module.pki.certificate_names
}
