output "ca_cert_pem" {
  description = "The deployment CA's certificate (PEM; public): nodes and operators verify NATS servers with it."
  value       = local.ca_cert_pem
}

output "certificate_names" {
  description = "Per NATS server name: the dns_names and ip_addresses its certificate covers."
  value       = local.servers
}

output "nats_tls" {
  description = "Per region name: the region module's nats_tls input, the CA certificate and, in topology order, each server's certificate and private key (sensitive)."
  sensitive   = true
  value = {
    for r in var.topology.regions : r.name => {
      ca_cert_pem = local.ca_cert_pem
      servers = [
        for s in r.nats : { cert_pem = local.server_cert_pems[s.name], key_pem = local.server_key_pems[s.name] }
      ]
    }
  }
}
