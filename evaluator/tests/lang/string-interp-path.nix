[ "${./data/sub}" "${./data/text.txt}" ]
