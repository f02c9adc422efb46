[ (placeholder "out") (placeholder "dev") ]
