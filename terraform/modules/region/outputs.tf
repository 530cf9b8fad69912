output "vpc_id" {
  description = "ID of the region's VPC."
  value       = aws_vpc.this.id
}

output "subnet_ids" {
  description = "IDs of the public subnets, one per availability zone."
  value       = aws_subnet.public[*].id
}

output "security_group_ids" {
  description = "Security group IDs by role: edge, nats, control_plane."
  value       = local.security_group_ids
}

output "edge_url" {
  description = "The region's edge URL, from the topology (the load balancer behind it)."
  value       = local.edge.url
}

output "edge_addresses" {
  description = "Public IPv4 addresses of the edge load balancer (one per AZ): what geo-DNS answers for this region."
  value       = aws_eip.edge[*].public_ip
}

output "edge_load_balancer_dns_name" {
  description = "AWS DNS name of the edge load balancer."
  value       = aws_lb.edge.dns_name
}

output "edge_autoscaling_group_name" {
  description = "Name of the edge autoscaling group."
  value       = aws_autoscaling_group.edge.name
}

output "nats_public_ips" {
  description = "Elastic IPs of the NATS servers in topology order (the other regions allow these to their gateway port)."
  value       = aws_eip.nats[*].public_ip
}

output "nats_public_dns" {
  description = "AWS public DNS names of the NATS servers' Elastic IPs (private address inside the VPC, public outside): the CNAME targets of their topology names."
  value       = aws_eip.nats[*].public_dns
}

output "nats_instance_ids" {
  description = "Instance IDs of the NATS servers in topology order."
  value       = aws_instance.nats[*].id
}

output "gateway_urls" {
  description = "NATS gateway URLs of this region (no credentials), built from the servers' stable DNS names in the topology."
  value       = [for s in local.nats_servers : "nats://${s.advertise_host}:${s.gateway_port}"]
}

output "control_plane_url" {
  description = "The control plane's API URL, from the topology."
  value       = local.control_plane.url
}

output "control_plane_public_ip" {
  description = "Elastic IP of the control-plane instance."
  value       = aws_eip.control_plane.public_ip
}

output "dns_server_addresses" {
  description = "Public addresses of this region's geo-DNS server (the control plane): the glue of the zone's delegation."
  value       = [aws_eip.control_plane.public_ip]
}

output "secrets_parameter_names" {
  description = "Names of the SSM SecureString parameters holding each role's secrets (values are never output): edge (the edge NATS password and the API keys), control_plane (the control NATS password and the API keys), nats (every NATS password, no API key)."
  value = {
    edge          = aws_ssm_parameter.secrets_edge.name
    control_plane = aws_ssm_parameter.secrets_control_plane.name
    nats          = aws_ssm_parameter.secrets_nats.name
  }
}

output "instance_role_names" {
  description = "Names of the IAM roles of the edges, the control plane and the NATS servers (e.g. to grant the control plane's role kms:Decrypt on a GeoIP bucket's key)."
  value = {
    edge          = aws_iam_role.edge.name
    control_plane = aws_iam_role.control_plane.name
    nats          = aws_iam_role.nats.name
  }
}

output "dns_records" {
  description = "What the dns module needs from this region: edge addresses, control-plane address, CNAME targets of the NATS servers."
  value = {
    edge_addresses        = aws_eip.edge[*].public_ip
    control_plane_address = aws_eip.control_plane.public_ip
    nats_targets          = aws_eip.nats[*].public_dns
  }
}

output "tls_parameter_names" {
  description = "Names of the SSM parameters the nodes fetch their NATS TLS files from (null without tls in the topology): ca (the CA certificate, String), and per server in topology order cert (String) and key (SecureString). Names only, never values."
  value       = local.tls_enabled ? local.tls_parameter_names : null
}
