output "topology" {
  description = "The topology as JSON, exactly what every node got: save it (terraform output -raw topology > topology.json) for `edgemesh` commands."
  value       = jsonencode(local.topology)
}

output "edge_url" {
  description = "The region's edge URL."
  value       = module.region.edge_url
}

output "edge_addresses" {
  description = "Public addresses of the edge load balancer."
  value       = module.region.edge_addresses
}

output "gateway_urls" {
  description = "NATS gateway URLs of the region (for adding regions later)."
  value       = module.region.gateway_urls
}

output "dns_server_addresses" {
  description = "Public addresses of the region's geo-DNS server."
  value       = module.region.dns_server_addresses
}

output "control_plane_url" {
  description = "The control-plane API URL (reachable from operator_cidrs)."
  value       = module.region.control_plane_url
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
